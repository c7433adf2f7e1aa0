"""The contiguous-commit tracker against a brute-force model, under random schedules."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrica_bridge.engine.offsets import OffsetTracker


def _model_commit(consumed: list[int], handled: set[int], start: int) -> int:
    """One past the last offset of the handled prefix, by brute force."""
    position = start
    for offset in consumed:
        if offset not in handled:
            return position
        position = offset + 1
    return position


@st.composite
def schedules(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    gaps = draw(st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=60))
    start = draw(st.integers(min_value=0, max_value=1000))
    offsets, offset = [], start
    for gap in gaps:
        offsets.append(offset)
        offset += gap
    order = draw(st.permutations(offsets))
    count = draw(st.integers(min_value=0, max_value=len(order)))
    return offsets, list(order[:count])


@settings(max_examples=400, deadline=None)
@given(schedules())
def test_commits_only_the_contiguous_handled_prefix(schedule: tuple[list[int], list[int]]) -> None:
    consumed, completions = schedule
    tracker = OffsetTracker()
    for offset in consumed:
        tracker.add("t", 0, offset)
    handled: set[int] = set()
    for offset in completions:
        tracker.complete("t", 0, offset)
        handled.add(offset)
        expected = _model_commit(consumed, handled, consumed[0])
        assert tracker.position("t", 0) == expected
        # Never past an unhandled offset, whatever the order of completions.
        assert all(o in handled for o in consumed if o < expected)
    assert tracker.in_flight() == len(consumed) - len(handled)


@settings(max_examples=200, deadline=None)
@given(schedules(), st.integers(min_value=0, max_value=60))
def test_interleaved_consume_and_complete(schedule: tuple[list[int], list[int]], cut: int) -> None:
    consumed, completions = schedule
    tracker = OffsetTracker()
    handled: set[int] = set()
    seen: list[int] = []
    for offset in consumed[:cut]:
        tracker.add("t", 1, offset)
        seen.append(offset)
    for offset in completions:
        if offset not in seen:
            continue
        tracker.complete("t", 1, offset)
        tracker.complete("t", 1, offset)  # a second completion changes nothing
        handled.add(offset)
    if seen:
        assert tracker.position("t", 1) == _model_commit(seen, handled, seen[0])


def test_revocation_forgets_the_partition_and_ignores_late_completions() -> None:
    tracker = OffsetTracker()
    for offset in (5, 6, 7):
        tracker.add("t", 0, offset)
    tracker.add("t", 1, 0)
    tracker.complete("t", 0, 5)
    assert tracker.committable() == {("t", 0): 6, ("t", 1): 0}
    tracker.revoke("t", 0)
    tracker.complete("t", 0, 6)  # work that finished after the hand-over
    assert tracker.partitions() == [("t", 1)]
    assert tracker.position("t", 0) is None
    # Re-assigned later: starts from whatever is consumed next, never from stale state.
    tracker.add("t", 0, 6)
    assert tracker.position("t", 0) == 6


def test_committable_reports_only_progress() -> None:
    tracker = OffsetTracker()
    tracker.add("t", 0, 0)
    tracker.add("t", 0, 1)
    tracker.complete("t", 0, 1)
    assert tracker.committable() == {("t", 0): 0}
    tracker.mark_committed({("t", 0): 0})
    assert tracker.committable() == {}
    tracker.complete("t", 0, 0)
    assert tracker.committable() == {("t", 0): 2}
    assert tracker.committable(only={("t", 9)}) == {}


def test_offsets_must_increase() -> None:
    tracker = OffsetTracker()
    tracker.add("t", 0, 10)
    with pytest.raises(ValueError, match="not after"):
        tracker.add("t", 0, 10)
    with pytest.raises(ValueError, match="not after"):
        tracker.add("t", 0, 3)


def test_add_all_tracks_a_batch_all_or_nothing() -> None:
    """Issue 16, item 18: a bad offset mid-batch used to leave the records before it tracked,
    never handed to the engine, so the partition never committed again."""
    tracker = OffsetTracker()
    tracker.add_all([("t", 0, 5), ("t", 1, 0)])
    with pytest.raises(ValueError, match="not after"):
        tracker.add_all([("t", 0, 6), ("t", 1, 1), ("t", 0, 6), ("t", 0, 7)])
    assert tracker.in_flight() == 2  # nothing of the refused batch
    with pytest.raises(ValueError, match="not after"):
        tracker.add_all([("t", 2, 3), ("t", 0, 4)])
    assert tracker.partitions() == [("t", 0), ("t", 1)]  # not even the new partition
    tracker.add_all([("t", 0, 6), ("t", 1, 1)])
    for partition, offset in ((0, 5), (0, 6), (1, 0), (1, 1)):
        tracker.complete("t", partition, offset)
    assert tracker.committable() == {("t", 0): 7, ("t", 1): 2}


def test_one_stuck_offset_counts_everything_behind_it() -> None:
    """Issue 16, item 4: handled offsets behind an unhandled one are not committable; they are
    what backpressure must count, or the partition consumes on and commits nothing."""
    tracker = OffsetTracker()
    tracker.add_all(("t", 0, offset) for offset in range(1_000))
    for offset in range(1, 1_000):
        tracker.complete("t", 0, offset)
    assert tracker.in_flight() == 1
    assert tracker.uncommittable() == 1_000
    assert tracker.committable() == {("t", 0): 0}


def test_the_age_of_the_oldest_unfinished_offset_per_partition() -> None:
    tracker = OffsetTracker()
    tracker.add_all([("t", 0, 7), ("t", 0, 8), ("t", 1, 3)])
    consumed = time.monotonic()
    tracker.complete("t", 0, 8)
    ages = tracker.oldest_unfinished_age(consumed + 60)
    assert set(ages) == {("t", 0), ("t", 1)}
    assert 60 <= ages[("t", 0)] < 61  # offset 7 still holds partition 0
    tracker.complete("t", 0, 7)
    tracker.complete("t", 1, 3)
    assert tracker.oldest_unfinished_age() == {}
    assert tracker.uncommittable() == 0
