"""Anything that is not exactly one valid record is a DecodeError, and nothing else escapes."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrica_bridge.codec import Codec, Decoded, DecodeError, SchemaUnavailable
from tests.codec.records import ALL_RECORDS, DEAL, LEAD, PAYMENT, SCHEMAS_DIR

CODEC = Codec.from_dir(SCHEMAS_DIR)
PHONE = "79995551111"
EMAIL = "mail@yandex.ru"
_WITH_PII = {
    **ALL_RECORDS[0][1],
    "client": {"uniq_id": "C-1", "name": None, "phones": [PHONE], "emails": [EMAIL]},
}
# Every version of every schema, so resolution paths are fuzzed too.
VALID = [
    CODEC.encode(name, record, writer_version=version)
    for name, record in [*ALL_RECORDS, (LEAD, _WITH_PII)]
    for version in CODEC.versions(name)
]
HEADERS = sorted({value[:10] for value in VALID})
_SAFE_REASON = set(string.ascii_letters + string.digits + string.punctuation + " ")
FUZZ = settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _header(name: str) -> bytes:
    return CODEC.encode(name, dict(next(r for n, r in ALL_RECORDS if n == name)))[:10]


def _decode_or_error(value: bytes) -> Decoded | None:
    """Decode; a DecodeError is fine, any other exception fails the test."""
    try:
        return CODEC.decode(value)
    except DecodeError as exc:
        reason = exc.reason
    assert 0 < len(reason) <= 200
    assert set(reason) <= _SAFE_REASON, reason
    assert PHONE not in reason
    assert EMAIL not in reason
    return None


def _reason(value: bytes | None) -> str:
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(value)
    assert type(caught.value) is DecodeError  # not SchemaUnavailable: retrying will not help
    return caught.value.reason


def test_valid_messages_in_the_corpus_decode() -> None:
    assert all(_decode_or_error(value) is not None for value in VALID)
    assert len(HEADERS) == 5
    assert any(PHONE.encode() in value for value in VALID)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty value"),
        (b"", "empty value"),
        (b"\x01abc", "unknown magic byte 0x01"),
        (b"{", "unknown magic byte 0x7b"),
        (b"\xc3", "truncated single-object header"),
        (b"\xc3\x01\x00\x00", "truncated single-object header"),
        (b"\xc3\x02" + bytes(8) + b"\x00", "unknown single-object format version 0x02"),
        (b"\xc3\x01" + bytes(8) + b"\x00", "unknown schema fingerprint 0000000000000000"),
        (b"\x00\x00\x01", "truncated confluent header"),
        (b"\x00\x00\x00\x00\x01\x00", "no schema registry is configured"),
    ],
)
def test_bad_framing(value: bytes | None, reason: str) -> None:
    assert reason in _reason(value)


def test_truncated_body_and_trailing_bytes() -> None:
    value = CODEC.encode(LEAD, dict(ALL_RECORDS[0][1]))
    assert _reason(value[:-1]) == "malformed Avro body for crm.events.LeadCreated v2 (EOFError)"
    assert "1 trailing bytes" in _reason(value + b"\x00")
    assert "3 trailing bytes" in _reason(value + b"abc")
    assert "malformed" in _reason(value[:10])  # a header and no body


def test_absurd_lengths_fail_fast_without_allocating() -> None:
    lead = _header(LEAD)
    # event_id claims 2**62 bytes.
    assert "EOFError" in _reason(lead + _zigzag(2**62) + b"abc")
    # A negative string length.
    assert "malformed" in _reason(lead + _zigzag(-5) + b"abc")
    # client.phones claims 2**62 items after an otherwise empty lead.
    empty_until_phones = b"\x02e" + b"\x00" + b"\x02l" + b"\x00" + b"\x02c" + b"\x00"
    assert "malformed" in _reason(lead + empty_until_phones + _zigzag(2**62))
    assert "malformed" in _reason(lead + empty_until_phones + _zigzag(-(2**62)) + _zigzag(3))
    # products claims 2**62 Product records after a minimal deal.
    deal = _header(DEAL) + b"\x02e\x00\x02d\x02c\x00\x02s\x00\x00\x00"
    assert "malformed" in _reason(deal + _zigzag(2**62) + b"\x02x\x02")
    # A decimal claiming more bytes than the message has.
    payment = _header(PAYMENT) + b"\x02e\x00\x02p\x02d\x02c"
    assert "malformed" in _reason(payment + _zigzag(2**40) + b"\x01")


def test_contents_fastavro_chokes_on() -> None:
    lead = _header(LEAD)
    assert "UnicodeDecodeError" in _reason(lead + b"\x04\xff\xfe")  # invalid UTF-8
    # deal_id union branch 7 of 2.
    assert "malformed" in _reason(lead + b"\x02e\x00\x02l\x0e")
    # occurred_at far beyond year 9999.
    assert "malformed" in _reason(lead + b"\x02e" + _zigzag(2**62))
    # A varint that never ends.
    assert "malformed" in _reason(lead + b"\x02e" + b"\xff" * 64)


@FUZZ
@given(st.binary(max_size=120))
def test_random_bytes(value: bytes) -> None:
    assert _decode_or_error(value) is None


@FUZZ
@given(st.sampled_from(HEADERS), st.binary(max_size=200))
def test_random_bodies_behind_valid_headers(header: bytes, body: bytes) -> None:
    decoded = _decode_or_error(header + body)
    if decoded is not None:  # random bytes can be a valid record (e.g. a tiny payment)
        assert decoded.schema_name in (LEAD, DEAL, PAYMENT)


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_truncated_valid_messages(value: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(value) - 1))
    assert _decode_or_error(value[:cut]) is None


@FUZZ
@given(st.sampled_from(VALID), st.binary(min_size=1, max_size=16))
def test_extended_valid_messages(value: bytes, extra: bytes) -> None:
    assert _decode_or_error(value + extra) is None


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_bit_flipped_valid_messages(value: bytes, data: st.DataObject) -> None:
    position = data.draw(st.integers(min_value=0, max_value=len(value) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    flipped = bytearray(value)
    flipped[position] ^= 1 << bit
    decoded = _decode_or_error(bytes(flipped))
    if position < 10:
        assert decoded is None  # the magic or the fingerprint no longer matches
    elif decoded is not None:  # a flipped character is still a valid string
        assert decoded.schema_name in (LEAD, DEAL, PAYMENT)


def test_schema_unavailable_is_a_decode_error() -> None:
    assert issubclass(SchemaUnavailable, DecodeError)
