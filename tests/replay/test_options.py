"""Options, filters and the verdict on one record: no broker needed."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from metrica_bridge.outcomes import ErrorClass
from metrica_bridge.replay.options import ReplayOptions, parse_when
from metrica_bridge.replay.records import DlqRecord, Verdict, judge
from metrica_bridge.steps.dlq import VALUE_DROPPED


def _record(
    cls: str = "retry_exhausted", failed_at: str | None = None, replays: int = 0
) -> DlqRecord:
    return DlqRecord(
        partition=0,
        offset=0,
        key=b"D1",
        value=b"v",
        headers=(
            ("trace-id", b"t"),
            ("dlq.error.class", cls.encode()),
            ("dlq.replay.count", str(replays).encode()),
        ),
        error_class=cls,
        failed_at=parse_when(failed_at) if failed_at else None,
        replay_count=replays,
        original_topic="deals",
        original_partition=0,
    )


@pytest.mark.parametrize(
    ("text", "end_of_day", "expected"),
    [
        ("2024-05-01", False, datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01", True, datetime(2024, 5, 2, tzinfo=UTC)),
        ("2024-05-01T12:30:00Z", False, datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("2024-05-01T12:30:00", True, datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("2024-05-01T15:30:00+03:00", False, datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("2024-05-01T12:30:00.123Z", False, datetime(2024, 5, 1, 12, 30, 0, 123000, tzinfo=UTC)),
    ],
)
def test_parse_when(text: str, end_of_day: bool, expected: datetime) -> None:
    assert parse_when(text, end_of_day=end_of_day) == expected


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01", "01.05.2024", ""])
def test_parse_when_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_when(text)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="limit"):
        ReplayOptions("x.dlq", limit=0)
    with pytest.raises(ValueError, match="since"):
        ReplayOptions("x.dlq", since=parse_when("2024-05-02"), until=parse_when("2024-05-01"))
    with pytest.raises(ValueError, match="timezone"):
        ReplayOptions("x.dlq", since=datetime(2024, 5, 1))
    with pytest.raises(ValueError, match="max_replays"):
        ReplayOptions("x.dlq", max_replays=0)


def test_filters_come_before_the_cap() -> None:
    only_rejected = ReplayOptions("x.dlq", error_classes=frozenset({ErrorClass.REJECTED.value}))
    assert judge(_record(replays=5), only_rejected) is Verdict.SKIP
    assert judge(_record("rejected", replays=5), only_rejected) is Verdict.REFUSE
    assert judge(_record("rejected", replays=2), only_rejected) is Verdict.REPLAY


def test_time_window_is_half_open_and_needs_a_time() -> None:
    window = ReplayOptions(
        "x.dlq", since=parse_when("2024-05-02"), until=parse_when("2024-05-02", end_of_day=True)
    )
    assert judge(_record(failed_at="2024-05-02T00:00:00Z"), window) is Verdict.REPLAY
    assert judge(_record(failed_at="2024-05-02T23:59:59.999Z"), window) is Verdict.REPLAY
    assert judge(_record(failed_at="2024-05-03T00:00:00Z"), window) is Verdict.SKIP
    assert judge(_record(failed_at="2024-05-01T23:59:59Z"), window) is Verdict.SKIP
    assert judge(_record(), window) is Verdict.SKIP


def test_replayed_headers_keep_the_original_ones_and_count_up() -> None:
    assert _record(replays=2).replayed_headers() == [
        ("trace-id", b"t"),
        ("dlq.replay.count", b"3"),
    ]


def test_a_stub_whose_value_stayed_behind_is_refused() -> None:
    """A dead letter too large for the DLQ holds headers only: replaying it would publish an
    empty value (issue 16, item 5)."""
    whole = _record("rejected")
    stub = dataclasses.replace(whole, value=None, headers=(*whole.headers, (VALUE_DROPPED, b"9")))
    options = ReplayOptions("x.dlq")
    assert judge(whole, options) is Verdict.REPLAY
    assert judge(stub, options) is Verdict.REFUSE
