"""Confluent wire format against a real (tiny) Schema Registry: caching and outages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from metrica_bridge import events
from metrica_bridge.codec import Codec, DecodeError, SchemaUnavailable, WireFormat
from metrica_bridge.codec.registry import RegistryClient
from metrica_bridge.codec.schemas import load_versions
from tests.codec.records import DEAL, LEAD, PAYMENT, RECORDS, SCHEMAS_DIR
from tests.support.schema_registry import SchemaRegistryServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _codec(url: str, clock: Clock, **kwargs: Any) -> Codec:
    return Codec(
        load_versions(SCHEMAS_DIR), RegistryClient(url, timeout_s=2.0), clock=clock, **kwargs
    )


def _framed(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def _produce(url: str, name: str, record: dict[str, Any], version: str | None = None) -> bytes:
    with Codec.from_dir(SCHEMAS_DIR, url) as producer:
        return producer.encode(name, record, WireFormat.CONFLUENT, writer_version=version)


def _current_schema(name: str) -> dict[str, Any]:
    source: dict[str, Any] = json.loads((SCHEMAS_DIR / events.SCHEMA_FILES[name]).read_text())
    return source


def test_one_lookup_per_schema_id(registry: SchemaRegistryServer) -> None:
    lead = _produce(registry.url, LEAD, RECORDS[LEAD][0])
    old_deal = _produce(registry.url, DEAL, RECORDS[DEAL][0], version="v1")
    lead_id, deal_id = (int.from_bytes(v[1:5], "big") for v in (lead, old_deal))
    assert lead_id != deal_id
    with Codec.from_dir(SCHEMAS_DIR, registry.url) as consumer:
        for _ in range(50):
            assert consumer.decode(lead).record == RECORDS[LEAD][0]
            assert consumer.decode(old_deal).record["products"] == []
    assert registry.lookups(lead_id) == 1
    assert registry.lookups(deal_id) == 1


def test_unknown_id_is_a_decode_error_cached_for_a_while(registry: SchemaRegistryServer) -> None:
    clock = Clock()
    with _codec(registry.url, clock, negative_ttl_s=30.0) as codec:
        for _ in range(100):
            with pytest.raises(DecodeError, match="schema id 77 is unknown") as caught:
                codec.decode(_framed(77, b"\x00"))
            assert type(caught.value) is DecodeError  # dead-letter, do not retry
        assert registry.lookups(77) == 1
        clock.now += 29
        with pytest.raises(DecodeError):
            codec.decode(_framed(77, b"\x00"))
        assert registry.lookups(77) == 1
        clock.now += 2
        with pytest.raises(DecodeError):
            codec.decode(_framed(77, b"\x00"))
        assert registry.lookups(77) == 2
        # Other ids are unaffected by the negative entry.
        value = _produce(registry.url, PAYMENT, RECORDS[PAYMENT][1])
        assert codec.decode(value).record == RECORDS[PAYMENT][1]


def test_registry_errors_are_schema_unavailable_with_backoff(
    registry: SchemaRegistryServer,
) -> None:
    value = _produce(registry.url, LEAD, RECORDS[LEAD][1])
    schema_id = int.from_bytes(value[1:5], "big")
    clock = Clock()
    with _codec(registry.url, clock, outage_backoff_s=5.0) as codec:
        registry.fail_status = 503
        with pytest.raises(SchemaUnavailable, match="HTTP 503"):
            codec.decode(value)
        # During the backoff no request reaches the registry, whatever the id.
        for other in (schema_id, 1234, 5678):
            with pytest.raises(SchemaUnavailable):
                codec.decode(_framed(other, b""))
        assert sum(registry.requests.values()) == 2  # the registration and one lookup
        clock.now += 5.1
        registry.fail_status = 401
        with pytest.raises(SchemaUnavailable, match="HTTP 401"):
            codec.decode(value)
        clock.now += 5.1
        registry.fail_status = None
        assert codec.decode(value).record == RECORDS[LEAD][1]
        assert registry.lookups(schema_id) == 3


def test_registry_down_is_schema_unavailable_and_cached_ids_keep_working(
    registry: SchemaRegistryServer,
) -> None:
    value = _produce(registry.url, DEAL, RECORDS[DEAL][1])
    other = _produce(registry.url, PAYMENT, RECORDS[PAYMENT][0])
    port = registry.url.rsplit(":", 1)[1]
    url = f"http://bridge:s3cret-pass@127.0.0.1:{port}"
    with Codec.from_dir(SCHEMAS_DIR, url) as codec:
        assert codec.decode(value).schema_name == DEAL
        registry.stop()
        assert codec.decode(value).schema_name == DEAL  # cached: no registry needed
        with pytest.raises(SchemaUnavailable) as caught:
            codec.decode(other)
    assert caught.value.reason == "schema registry unreachable (ConnectError)"
    assert "s3cret" not in str(caught.value)


def test_encode_with_registry_down_is_schema_unavailable(registry: SchemaRegistryServer) -> None:
    with Codec.from_dir(SCHEMAS_DIR, registry.url) as codec:
        registry.stop()
        with pytest.raises(SchemaUnavailable):
            codec.encode(LEAD, RECORDS[LEAD][0], WireFormat.CONFLUENT)


def test_newer_writer_schema_from_the_registry_resolves(registry: SchemaRegistryServer) -> None:
    """A CRM producer already on a newer LeadCreated than ours: extra fields are dropped."""
    newer = _current_schema(LEAD)
    newer["fields"] = [
        *newer["fields"],
        {"name": "landing_page", "type": ["null", "string"], "default": None},
    ]
    schema_id = registry.add(newer, LEAD)
    with Codec(load_versions(SCHEMAS_DIR)) as local:
        body = local.encode(LEAD, RECORDS[LEAD][0])[10:]
    body += b"\x02" + b"\x1ahttps://x.ru/"  # the union branch "string" and its value
    with Codec.from_dir(SCHEMAS_DIR, registry.url) as codec:
        decoded = codec.decode(_framed(schema_id, body))
    assert decoded.record == RECORDS[LEAD][0]
    assert isinstance(events.parse_event(decoded.schema_name, decoded.record), events.LeadCreated)


def test_registry_schema_of_another_record_type(registry: SchemaRegistryServer) -> None:
    schema_id = registry.add(
        {
            "type": "record",
            "name": "Invoice",
            "namespace": "erp",
            "fields": [{"name": "n", "type": "int"}],
        }
    )
    with Codec.from_dir(SCHEMAS_DIR, registry.url) as codec:
        with pytest.raises(DecodeError, match=r"'erp\.Invoice', not a CRM event type"):
            codec.decode(_framed(schema_id, b"\x02"))
        with pytest.raises(DecodeError):
            codec.decode(_framed(schema_id, b"\x02"))
    assert registry.lookups(schema_id) == 1


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ('"string"', "not a record"),
        ("not json", "not JSON"),
        (
            json.dumps(
                {
                    "type": "record",
                    "name": "crm.events.DealStatusChanged",
                    "fields": [{"name": "x", "type": {"type": "array", "items": "null"}}],
                }
            ),
            "zero-width items",
        ),
    ],
)
def test_unusable_registry_schemas(
    registry: SchemaRegistryServer, schema: str, reason: str
) -> None:
    schema_id = registry.add(schema)
    # 2**20 null items in 4 bytes (2**62 would keep a consumer busy for hours).
    many_nulls = b"\x80\x80\x80\x01\x00"
    with (
        Codec.from_dir(SCHEMAS_DIR, registry.url) as codec,
        pytest.raises(DecodeError, match=reason),
    ):
        codec.decode(_framed(schema_id, many_nulls))
