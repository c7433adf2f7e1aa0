"""Issue 16: headers and keys are anyone's to write. Counts are read strictly (ASCII digits,
bounded), a record without a key is invalid, and ``dlq.attempts`` says how often it was tried."""

from __future__ import annotations

import pytest

from metrica_bridge.codec import Codec
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.events import EventKind
from metrica_bridge.kafka.record import SourceRecord
from metrica_bridge.outcomes import ErrorClass
from metrica_bridge.replay.records import _int
from metrica_bridge.steps.dlq import (
    REPLAY_COUNT,
    count_header,
    dlq_headers,
    is_replay,
    replay_count,
)
from metrica_bridge.steps.parse import parse
from tests.codec.records import LEAD, RECORDS


def _record(
    headers: tuple[tuple[str, bytes], ...] = (), key: bytes | None = b"L-1"
) -> SourceRecord:
    return SourceRecord("lead-created", 0, 7, key, b"", headers, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("3", 3),
        ("999999999", 999_999_999),
        ("²", None),  # isdigit() says yes, int() raises
        ("١٢", None),  # Arabic-Indic digits: int() takes them, we do not
        ("1" * 10, None),
        ("9" * 5000, None),  # int() would refuse it too (and spend time on it)
        (" 1", None),
        ("-1", None),
        ("", None),
        (None, None),
    ],
)
def test_counts_are_ascii_digits_and_bounded(text: str | None, expected: int | None) -> None:
    assert count_header(text) == expected
    assert _int(text) == expected  # the replay command reads them the same way


@pytest.mark.parametrize("value", ["²".encode(), b"\xff\xfe", b"9" * 100, b"-3"])
def test_a_hostile_replay_count_is_no_replay(value: bytes) -> None:
    record = _record(((REPLAY_COUNT, value),))
    assert not is_replay(record)
    assert replay_count(record) == 0
    headers = dict(dlq_headers(record, ErrorClass.INVALID_EVENT, "x", attempts=5))
    assert headers[REPLAY_COUNT] == b"0"
    assert headers["dlq.attempts"] == b"5"
    assert is_replay(_record(((REPLAY_COUNT, b"2"),)))


def test_a_record_without_a_key_is_invalid() -> None:
    codec = Codec.from_dir(PROJECT_ROOT / "schemas")
    value = codec.encode(LEAD, RECORDS[LEAD][0])
    kinds = {"lead-created": EventKind.LEAD_CREATED}
    source = SourceRecord("lead-created", 0, 0, None, value, (), None)
    assert parse(codec, kinds, source) == (ErrorClass.INVALID_EVENT, "record has no key")
    key = RECORDS[LEAD][0]["lead_id"].encode()
    keyed = SourceRecord("lead-created", 0, 0, key, value, (), None)
    assert not isinstance(parse(codec, kinds, keyed), tuple)
