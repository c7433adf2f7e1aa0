"""One independent consumer (one consumer group) for one topic.

Records flow: consumer thread → ``_on_records`` (track the offset) → the engine (parse, then
rounds) → offset completed. Offsets and commits belong to the ``Committer`` (engine/commits.py),
which a ticking loop here polls; backpressure pauses the partitions while too much is in flight
(a slow or unavailable Metrica), and resumes when half of it has drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

from metrica_bridge.config import Settings
from metrica_bridge.engine.commits import Committer
from metrica_bridge.engine.consumer import ConsumerThread
from metrica_bridge.engine.intake import Intake
from metrica_bridge.engine.offsets import TopicPartition
from metrica_bridge.engine.work import Work
from metrica_bridge.kafka.record import SourceRecord
from metrica_bridge.logs import get_logger
from metrica_bridge.metrics import (
    EVENTS_CONSUMED,
    IN_FLIGHT,
    OLDEST_UNFINISHED,
    PARTITIONS_ASSIGNED,
)

log = get_logger("metrica_bridge.engine.runner")


class TopicRunner:
    def __init__(
        self,
        topic: str,
        group_id: str,
        kafka_config: Mapping[str, str],
        intake: Intake,
        flush_soon: Callable[[], None],
        settings: Settings,
    ) -> None:
        self.topic = topic
        self.intake = intake
        self._flush_soon = flush_soon  # send what the batcher holds now (a revocation drains)
        self.settings = settings
        self.commits = Committer(
            # Late-bound: the consumer thread exists only after start().
            lambda offsets: self.consumer.commit(offsets),
            settings.commit_interval_ms / 1000,
            topic=topic,
        )
        self._config = {**kafka_config, "group.id": group_id}
        self._consumer: ConsumerThread | None = None
        self._paused = False
        self._stopping = False
        self._drain_deadline = 0.0  # monotonic; set by stop(): one budget for the whole drain
        self._tick_task: asyncio.Task[None] | None = None
        self._consumed = EVENTS_CONSUMED.labels(topic=topic)
        self._in_flight = IN_FLIGHT.labels(topic=topic)
        self.assigned: set[TopicPartition] = set()

    @property
    def consumer(self) -> ConsumerThread:
        assert self._consumer is not None, "start() first"
        return self._consumer

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._consumer = ConsumerThread(
            self._config,
            [self.topic],
            loop,
            on_records=self._on_records,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            admit=lambda: not self._paused,
            # One poll never takes more than the in-flight limit: memory stays within twice it.
            batch_size=min(2_000, self.settings.max_in_flight_events),
            revoke_timeout_s=self.settings.shutdown_timeout_s + 5,
        )
        self._consumer.start()
        self._tick_task = asyncio.create_task(self._tick_loop(), name=f"commit:{self.topic}")

    async def stop(self) -> None:
        """Stop fetching, drain (within SHUTDOWN_TIMEOUT_S in all), commit, leave the group."""
        self._stopping = True
        self._drain_deadline = time.monotonic() + self.settings.shutdown_timeout_s
        if self._consumer is not None:
            await self._consumer.stop()
        # Released parked events belong to no partition, so revocation did not drain them:
        # finish them within the same bound, or leave them parked (their lease lapses).
        released = {(self.topic, -1)}
        self.intake.drop(released)
        if not await self.intake.wait_done(released, self._drain_left()):
            self.intake.abandon(released)
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task

    def _drain_left(self) -> float:
        return max(0.1, self._drain_deadline - time.monotonic())

    def healthy(self) -> bool:
        return self._consumer is not None and self._consumer.alive() and not self._consumer.fatal

    # -- records in ----------------------------------------------------------------------------
    def _on_records(self, records: list[SourceRecord], at_end: list[TopicPartition]) -> None:
        if self._stopping:
            return  # not tracked, not committed: the next owner reads them again
        assigned, commits = self.assigned, self.commits
        # Records of partitions revoked while the batch was on its way are left out.
        kept = [r for r in records if (r.topic, r.partition) in assigned]
        commits.track((r.topic, r.partition, r.offset) for r in kept)  # all or nothing
        self.intake.consume(kept, self._complete)
        self.intake.at_end(self.topic, (tp for tp in at_end if tp in assigned))
        self._consumed.inc(len(records))
        self._in_flight.set(commits.in_flight())
        if not self._paused and self._too_much():
            self._set_paused(True)

    def _complete(self, work: Work) -> None:
        source = work.source
        self.commits.complete(source.topic, source.partition, source.offset)

    # -- group membership ----------------------------------------------------------------------
    async def _on_assign(self, tps: list[TopicPartition]) -> None:
        self.assigned.update(tps)
        self.intake.assigned(self.topic, tps)
        PARTITIONS_ASSIGNED.labels(topic=self.topic).set(len(self.assigned))

    async def _on_revoke(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        revoked = set(tps)
        self.intake.revoked(self.topic, tps)
        self.intake.drop(revoked)
        if self.intake.busy(revoked):
            self._flush_soon()
            timeout = self._drain_left() if self._stopping else self.settings.shutdown_timeout_s
            if not await self.intake.wait_done(revoked, timeout):
                # Abandoned: uncommitted, so the next owner handles it (and finds its outcome
                # in the ledger, if it is recorded meanwhile).
                count = self.intake.abandon(revoked)
                log.warning("abandoned in-flight events on revocation", count=count)
        offsets = self.commits.revoke(revoked)  # the consumer thread commits them
        for topic, partition in tps:
            with contextlib.suppress(KeyError):  # not ours to report any more
                OLDEST_UNFINISHED.remove(topic, str(partition))
        self.assigned.difference_update(revoked)
        PARTITIONS_ASSIGNED.labels(topic=self.topic).set(len(self.assigned))
        self._in_flight.set(self.commits.in_flight())
        return offsets

    # -- backpressure and metrics --------------------------------------------------------------
    def _too_much(self, share: float = 1.0) -> bool:
        """In flight beyond the limit, or too far ahead of the topics upstream: records held for
        them are only memory (a quarter of the limit is plenty to keep the engine busy)."""
        limit = self.settings.max_in_flight_events * share
        held = self.intake.held(self.topic)
        return self.commits.uncommittable() >= limit or held >= max(1.0, limit / 4)

    def _export_oldest(self) -> None:
        ages = self.commits.oldest_unfinished_age()
        for topic, partition in self.assigned:
            gauge = OLDEST_UNFINISHED.labels(topic=topic, partition=str(partition))
            gauge.set(ages.get((topic, partition), 0.0))

    def _set_paused(self, paused: bool) -> None:
        # Read by the consumer thread before its next poll (a plain attribute: atomic).
        self._paused = paused
        log.info("backpressure", paused=paused, in_flight=self.commits.in_flight())

    async def _tick_loop(self) -> None:
        """Backpressure and metrics every tick; the committer commits when its interval is due."""
        interval = self.settings.commit_interval_ms / 1000
        while True:
            await asyncio.sleep(min(interval, 0.1))
            in_flight = self.commits.in_flight()
            IN_FLIGHT.labels(topic=self.topic).set(in_flight)
            self._export_oldest()
            if self._paused and not self._too_much(share=0.5):
                self._set_paused(False)
            await self.commits.commit_if_due()
