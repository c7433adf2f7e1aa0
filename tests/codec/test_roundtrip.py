"""Every schema round-trips in both wire formats, byte layouts match the specs."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from metrica_bridge import events
from metrica_bridge.codec import Codec, Decoded, WireFormat
from tests.codec.records import ALL_RECORDS, DEAL, LEAD, PAYMENT, SCHEMAS_DIR
from tests.support.schema_registry import SchemaRegistryServer

_EMPTY = 0xC15D213AA4D7A795


def _crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO exactly as the Avro specification writes it (independent of fastavro)."""
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_crc64_reference_matches_the_spec_test_vector() -> None:
    # Avro's share/test/data/schema-tests.txt: fingerprint of "null" is 7195948357588979594.
    assert _crc64_avro(b'"null"') == 7195948357588979594


@pytest.mark.parametrize(("name", "record"), ALL_RECORDS)
def test_single_object_round_trip(codec: Codec, name: str, record: dict[str, Any]) -> None:
    value = codec.encode(name, record)
    decoded = codec.decode(value)
    assert decoded == Decoded(name, record, WireFormat.SINGLE_OBJECT)
    assert events.parse_event(decoded.schema_name, decoded.record).schema_name == name


@pytest.mark.parametrize("name", [LEAD, DEAL, PAYMENT])
def test_single_object_header_is_magic_and_little_endian_fingerprint(
    codec: Codec, name: str
) -> None:
    from fastavro.schema import to_parsing_canonical_form

    source = json.loads((SCHEMAS_DIR / events.SCHEMA_FILES[name]).read_text())
    canonical = to_parsing_canonical_form(source).encode()
    value = codec.encode(name, events_record(name))
    assert value[:2] == b"\xc3\x01"
    assert value[2:10] == _crc64_avro(canonical).to_bytes(8, "little")


def events_record(name: str) -> dict[str, Any]:
    return next(record for n, record in ALL_RECORDS if n == name)


def test_decimals_keep_scale_and_precision(codec: Codec) -> None:
    record = {**events_record(PAYMENT), "amount": Decimal("10.5")}
    decoded = codec.decode(codec.encode(PAYMENT, record)).record
    assert str(decoded["amount"]) == "10.50"


def test_timestamps_are_utc_aware_millis(codec: Codec) -> None:
    decoded = codec.decode(codec.encode(LEAD, events_record(LEAD))).record
    assert decoded["occurred_at"].utcoffset().total_seconds() == 0
    assert decoded["occurred_at"].microsecond == 345000


@pytest.mark.parametrize(("name", "record"), ALL_RECORDS)
def test_confluent_round_trip(
    registry: SchemaRegistryServer, name: str, record: dict[str, Any]
) -> None:
    with Codec.from_dir(SCHEMAS_DIR, registry.url) as producer:
        value = producer.encode(name, record, WireFormat.CONFLUENT)
    assert value[0] == 0
    schema_id = int.from_bytes(value[1:5], "big")
    assert registry.subjects[name] == [schema_id]  # default subject: the full name
    with Codec.from_dir(SCHEMAS_DIR, registry.url) as consumer:
        assert consumer.decode(value) == Decoded(name, record, WireFormat.CONFLUENT)


def test_confluent_encode_registers_once_per_subject(registry: SchemaRegistryServer) -> None:
    with Codec.from_dir(SCHEMAS_DIR, registry.url) as producer:
        first = producer.encode(DEAL, events_record(DEAL), WireFormat.CONFLUENT)
        second = producer.encode(
            DEAL, events_record(DEAL), WireFormat.CONFLUENT, subject="deal-status-changed-value"
        )
        for _ in range(3):
            producer.encode(DEAL, events_record(DEAL), WireFormat.CONFLUENT)
        # The producer knows what it registered: decoding needs no lookup.
        assert producer.decode(first).record == events_record(DEAL)
    assert first[1:5] == second[1:5]  # the same schema has one global id
    assert registry.requests[f"POST /subjects/{DEAL}/versions"] == 1
    assert registry.requests["POST /subjects/deal-status-changed-value/versions"] == 1
    assert registry.lookups(int.from_bytes(first[1:5], "big")) == 0


def test_wire_format_is_a_string_enum() -> None:
    assert WireFormat("confluent") is WireFormat.CONFLUENT
    assert str(WireFormat.SINGLE_OBJECT) == "single-object"


def test_encode_refuses_unknown_schema_version_and_bad_records(codec: Codec) -> None:
    with pytest.raises(ValueError, match="unknown schema"):
        codec.encode("crm.events.Nope", {})
    with pytest.raises(ValueError, match="no version"):
        codec.encode(LEAD, events_record(LEAD), writer_version="v9")
    with pytest.raises(ValueError, match="does not fit"):
        codec.encode(PAYMENT, {**events_record(PAYMENT), "amount": "a lot"})
    with pytest.raises(ValueError, match="does not fit"):
        codec.encode(DEAL, {"event_id": "x"})
    with pytest.raises(ValueError, match="schema registry"):
        codec.encode(LEAD, events_record(LEAD), WireFormat.CONFLUENT)
