"""One owner for a consumer's commits: which offsets, when, and what happens on revocation.

The committer tracks consumed and handled offsets (``OffsetTracker``), commits the contiguous
handled prefix every COMMIT_INTERVAL_MS when polled, and hands out the revoked partitions'
offsets on revocation, forgetting them afterwards. It never talks to the broker itself: the
commit is a callable into the consumer thread, the only thread allowed to call librdkafka.

On revocation the consumer thread is blocked in librdkafka's callback, so it cannot serve a
commit command; it commits what ``revoke`` returns itself, before the partitions go. The same
path is the final commit on stop: closing the consumer revokes the whole assignment.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

from metrica_bridge.engine.offsets import OffsetTracker, TopicPartition
from metrica_bridge.logs import get_logger

log = get_logger("metrica_bridge.engine.commits")

CommitFn = Callable[[Mapping[TopicPartition, int]], Awaitable[None]]
"""Commits offsets (Kafka semantics: the next offset to read) to the broker, or raises."""


class Committer:
    def __init__(
        self,
        commit: CommitFn,
        interval_s: float,
        *,
        topic: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._commit = commit
        self._interval_s = interval_s
        self._topic = topic
        self._clock = clock
        self._tracker = OffsetTracker()
        self._due = clock() + interval_s

    def track(self, offsets: Iterable[tuple[str, int, int]]) -> None:
        """Consumed (topic, partition, offset)s: all of them, or (ValueError) none."""
        self._tracker.add_all(offsets)

    def complete(self, topic: str, partition: int, offset: int) -> None:
        self._tracker.complete(topic, partition, offset)

    async def commit(self) -> None:
        """Commit whatever advanced since the last commit; raises what the commit raises."""
        offsets = self._tracker.committable()
        if offsets:
            await self._commit(offsets)
            # Only after the broker took them: a failed commit is offered again next time.
            self._tracker.mark_committed(offsets)

    async def commit_if_due(self) -> None:
        """Commit when the interval has passed; a failure is logged and retried next interval,
        since a missed commit only costs records read again after a crash."""
        if self._clock() < self._due:
            return
        self._due = self._clock() + self._interval_s
        try:
            await self.commit()
        except Exception as exc:
            log.warning("commit failed", topic=self._topic, error=f"{type(exc).__name__}: {exc}")

    def revoke(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The offsets to commit before ``partitions`` go to another member; forgets them, so
        work that finishes after the hand-over moves nothing."""
        revoked = set(partitions)
        offsets = self._tracker.committable(only=revoked)
        for topic, partition in revoked:
            self._tracker.revoke(topic, partition)
        return offsets

    # -- what backpressure and the metrics read ------------------------------------------------
    def in_flight(self) -> int:
        return self._tracker.in_flight()

    def uncommittable(self) -> int:
        return self._tracker.uncommittable()

    def oldest_unfinished_age(self) -> dict[TopicPartition, float]:
        return self._tracker.oldest_unfinished_age()
