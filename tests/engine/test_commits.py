"""The committer on its own: a fake commit function and a hand-moved clock, no broker."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from structlog.testing import capture_logs

from metrica_bridge.engine.commits import Committer
from metrica_bridge.engine.offsets import TopicPartition


class FakeBroker:
    """Records every commit; fails the next ``failures`` of them."""

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self.failures = 0

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("broker unavailable")
        self.commits.append(dict(offsets))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _committer(interval_s: float = 5.0) -> tuple[Committer, FakeBroker, Clock]:
    broker, clock = FakeBroker(), Clock()
    return Committer(broker.commit, interval_s, topic="t", clock=clock), broker, clock


async def test_commits_only_the_contiguous_handled_prefix() -> None:
    committer, broker, _ = _committer()
    committer.track(("t", 0, offset) for offset in range(5))
    for offset in (0, 1, 3):
        committer.complete("t", 0, offset)
    await committer.commit()
    assert broker.commits == [{("t", 0): 2}]  # 3 is handled, but 2 is not
    committer.complete("t", 0, 2)
    await committer.commit()
    assert broker.commits[-1] == {("t", 0): 4}
    await committer.commit()
    assert len(broker.commits) == 2  # nothing advanced: nothing sent


async def test_out_of_order_completion_commits_once_the_gap_closes() -> None:
    committer, broker, _ = _committer()
    committer.track([("t", 0, 10), ("t", 0, 11), ("t", 0, 12), ("t", 1, 7)])
    committer.complete("t", 0, 12)
    committer.complete("t", 0, 11)
    await committer.commit()
    # Partition 0 stays at its first unhandled offset; partition 1 has not moved either.
    assert broker.commits == [{("t", 0): 10, ("t", 1): 7}]
    committer.complete("t", 0, 10)
    await committer.commit()
    assert broker.commits[-1] == {("t", 0): 13}


async def test_commits_only_when_the_interval_has_passed() -> None:
    committer, broker, clock = _committer(interval_s=5.0)
    committer.track([("t", 0, 0)])
    committer.complete("t", 0, 0)
    clock.now += 4.9
    await committer.commit_if_due()
    assert broker.commits == []
    clock.now += 0.1
    await committer.commit_if_due()
    assert broker.commits == [{("t", 0): 1}]
    committer.track([("t", 0, 1)])
    committer.complete("t", 0, 1)
    clock.now += 4.9
    await committer.commit_if_due()
    assert len(broker.commits) == 1  # the next interval starts at the last commit
    clock.now += 0.1
    await committer.commit_if_due()
    assert broker.commits[-1] == {("t", 0): 2}


async def test_a_failed_commit_is_retried_next_interval_and_loses_nothing() -> None:
    committer, broker, clock = _committer(interval_s=1.0)
    committer.track([("t", 0, 0), ("t", 1, 0)])
    committer.complete("t", 0, 0)
    broker.failures = 1
    clock.now += 1.0
    with capture_logs() as logs:
        await committer.commit_if_due()  # swallowed: the next interval tries again
    assert broker.commits == []
    assert logs == [
        {
            "event": "commit failed",
            "topic": "t",
            "error": "RuntimeError: broker unavailable",
            "log_level": "warning",
        }
    ]
    committer.complete("t", 1, 0)
    clock.now += 0.5
    await committer.commit_if_due()
    assert broker.commits == []  # not before the interval
    clock.now += 0.5
    await committer.commit_if_due()
    assert broker.commits == [{("t", 0): 1, ("t", 1): 1}]


async def test_commit_raises_what_the_broker_raises() -> None:
    committer, broker, _ = _committer()
    committer.track([("t", 0, 0)])
    committer.complete("t", 0, 0)
    broker.failures = 1
    with pytest.raises(RuntimeError, match="broker unavailable"):
        await committer.commit()
    await committer.commit()
    assert broker.commits == [{("t", 0): 1}]


async def test_revocation_hands_out_only_the_revoked_partitions_and_forgets_them() -> None:
    committer, broker, _ = _committer()
    committer.track([("t", 0, 0), ("t", 0, 1), ("t", 1, 5), ("t", 2, 9)])
    committer.complete("t", 0, 0)
    committer.complete("t", 1, 5)
    assert committer.revoke([("t", 0), ("t", 1)]) == {("t", 0): 1, ("t", 1): 6}
    assert broker.commits == []  # the consumer thread commits them, not the committer
    assert committer.in_flight() == 1  # only partition 2's offset is left
    committer.complete("t", 0, 1)  # work that finished after the hand-over
    await committer.commit()
    assert broker.commits == [{("t", 2): 9}]
    # Assigned again later: tracked afresh from wherever the next owner left it.
    committer.track([("t", 0, 40)])
    committer.complete("t", 0, 40)
    await committer.commit()
    assert broker.commits[-1] == {("t", 0): 41}


async def test_revocation_leaves_out_what_is_already_committed() -> None:
    committer, _, _ = _committer()
    committer.track([("t", 0, 0), ("t", 0, 1)])
    committer.complete("t", 0, 0)
    await committer.commit()
    assert committer.revoke([("t", 0), ("t", 7)]) == {}


async def test_tracking_a_batch_is_all_or_nothing() -> None:
    committer, broker, _ = _committer()
    committer.track([("t", 0, 5)])
    with pytest.raises(ValueError, match="not after"):
        committer.track([("t", 1, 0), ("t", 0, 6), ("t", 0, 6)])
    assert committer.in_flight() == 1
    assert committer.uncommittable() == 1
    await committer.commit()
    assert broker.commits == [{("t", 0): 5}]  # partition 1 was never tracked


def test_backpressure_numbers() -> None:
    committer, _, _ = _committer()
    committer.track([("t", 0, 0), ("t", 0, 1), ("t", 0, 2), ("t", 1, 0)])
    committer.complete("t", 0, 1)
    committer.complete("t", 0, 2)
    committer.complete("t", 1, 0)
    assert committer.in_flight() == 1
    assert committer.uncommittable() == 3  # the handled ones behind offset 0 count too
    assert set(committer.oldest_unfinished_age()) == {("t", 0)}
