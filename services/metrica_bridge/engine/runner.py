"""One independent consumer (one consumer group) for one topic.

Records flow: consumer thread → ``_on_records`` (parse, track offset) → per-key scheduler →
pipeline → offset completed. A commit loop commits the contiguous handled prefix; backpressure
pauses the partitions while too much is in flight (a slow or unavailable Metrica), and resumes
when half of it has drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from metrica_bridge.codec import SchemaUnavailable
from metrica_bridge.config import Settings
from metrica_bridge.engine.consumer import ConsumerThread
from metrica_bridge.engine.keyed import Job, KeyedScheduler
from metrica_bridge.engine.offsets import OffsetTracker, TopicPartition
from metrica_bridge.engine.pipeline import Parsed, Pipeline
from metrica_bridge.logs import get_logger
from metrica_bridge.metrics import EVENTS_CONSUMED, IN_FLIGHT, PARTITIONS_ASSIGNED, ErrorClass
from metrica_bridge.steps.dlq import SourceRecord

log = get_logger("metrica_bridge.engine.runner")

Step = Callable[[], Coroutine[Any, Any, None]]
RETRY_INFRA_S = (0.5, 1.0, 2.0, 5.0, 10.0)


class TopicRunner:
    def __init__(
        self,
        topic: str,
        group_id: str,
        kafka_config: Mapping[str, str],
        pipeline: Pipeline,
        settings: Settings,
    ) -> None:
        self.topic = topic
        self.pipeline = pipeline
        self.settings = settings
        self.tracker = OffsetTracker()
        self.scheduler = KeyedScheduler(settings.worker_concurrency)
        self._config = {**kafka_config, "group.id": group_id}
        self._consumer: ConsumerThread | None = None
        self._paused = False
        self._stopping = False
        self._drain_deadline = 0.0  # monotonic; set by stop(): one budget for the whole drain
        self._commit_task: asyncio.Task[None] | None = None
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
            batch_size=min(1_000, self.settings.max_in_flight_events),
            revoke_timeout_s=self.settings.shutdown_timeout_s + 5,
        )
        self._consumer.start()
        self._commit_task = asyncio.create_task(self._commit_loop(), name=f"commit:{self.topic}")

    async def stop(self) -> None:
        """Stop fetching, drain (within SHUTDOWN_TIMEOUT_S in all), commit, leave the group."""
        self._stopping = True
        self._drain_deadline = time.monotonic() + self.settings.shutdown_timeout_s
        if self._consumer is not None:
            await self._consumer.stop()
        # Released parked events belong to no partition, so revocation did not drain them:
        # finish them within the same bound, or leave them parked (their lease lapses).
        released = {(self.topic, -1)}
        self.scheduler.drop_queued(released)
        tasks = self.scheduler.running_tasks(released)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self._drain_left())
            for task in pending:
                task.cancel()
            await asyncio.wait(tasks, timeout=5)
        if self._commit_task is not None:
            self._commit_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._commit_task

    def _drain_left(self) -> float:
        return max(0.1, self._drain_deadline - time.monotonic())

    def healthy(self) -> bool:
        return self._consumer is not None and self._consumer.alive() and not self._consumer.fatal

    # -- records in ----------------------------------------------------------------------------
    def _on_records(self, records: list[SourceRecord]) -> None:
        if self._stopping:
            return  # not tracked, not committed: the next owner reads them again
        for record in records:
            tp = (record.topic, record.partition)
            if tp not in self.assigned:
                continue  # revoked while the batch was on its way
            self.tracker.add(record.topic, record.partition, record.offset)
            try:
                parsed: Parsed | tuple[ErrorClass, str] | None = self.pipeline.parse(record)
            except SchemaUnavailable:
                parsed = None
            key = record.key.decode("utf-8", "replace") if record.key else f"@{record.offset}"
            self.scheduler.submit(Job(key, tp, functools.partial(self._run, record, parsed)))
        EVENTS_CONSUMED.labels(topic=self.topic).inc(len(records))
        IN_FLIGHT.labels(topic=self.topic).set(self.tracker.in_flight())
        if not self._paused and self.tracker.in_flight() >= self.settings.max_in_flight_events:
            self._set_paused(True)

    def submit_released(self, key: str, source: SourceRecord, step: Step) -> None:
        """Work on a parked event (released, or expired to the DLQ): ordered behind live events
        of its deal, retried like them, drained on stop; not tracked, since its offset was
        committed when it was parked."""
        job = functools.partial(self._retrying, source, step, lambda: None)
        self.scheduler.submit(Job(key, (source.topic, -1), job))

    async def _run(
        self, record: SourceRecord, parsed: Parsed | tuple[ErrorClass, str] | None
    ) -> None:
        async def step() -> None:
            nonlocal parsed
            if parsed is None:  # the registry was unavailable when it arrived
                parsed = self.pipeline.parse(record)
            if isinstance(parsed, Parsed):
                await self.pipeline.handle(parsed)
            else:
                error_class, reason = parsed
                await self.pipeline.dead_letter(record, error_class, reason, None)

        def event_id() -> str | None:
            return parsed.event.event_id if isinstance(parsed, Parsed) else None

        await self._retrying(record, step, event_id)
        self.tracker.complete(record.topic, record.partition, record.offset)

    async def _retrying(
        self, record: SourceRecord, step: Step, event_id: Callable[[], str | None]
    ) -> None:
        attempt = 0
        while True:
            try:
                await step()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # Cancelled (shutdown, revocation) and the clean-up on the way out failed
                    # (the store is closed): stop, uncommitted, instead of retrying forever.
                    raise asyncio.CancelledError from exc
                # The store or the broker failed us: the event is not handled, so its offset
                # stays uncommitted. Try again; a restart would re-deliver it anyway.
                delay = RETRY_INFRA_S[min(attempt, len(RETRY_INFRA_S) - 1)]
                attempt += 1
                log.error(
                    "event handling failed; retrying",
                    event_id=event_id(),
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)

    # -- group membership ----------------------------------------------------------------------
    async def _on_assign(self, tps: list[TopicPartition]) -> None:
        self.assigned.update(tps)
        PARTITIONS_ASSIGNED.labels(topic=self.topic).set(len(self.assigned))

    async def _on_revoke(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        revoked = set(tps)
        self.scheduler.drop_queued(revoked)
        tasks = self.scheduler.running_tasks(revoked)
        if tasks:
            self.pipeline.batcher.flush_soon()
            timeout = self._drain_left() if self._stopping else self.settings.shutdown_timeout_s
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()  # abandoned: uncommitted, so the next owner handles it
            if pending:
                await asyncio.wait(pending, timeout=5)
                log.warning("abandoned in-flight events on revocation", count=len(pending))
        offsets = self.tracker.committable(only=revoked)
        for topic, partition in tps:
            self.tracker.revoke(topic, partition)
        self.assigned.difference_update(revoked)
        PARTITIONS_ASSIGNED.labels(topic=self.topic).set(len(self.assigned))
        IN_FLIGHT.labels(topic=self.topic).set(self.tracker.in_flight())
        return offsets

    # -- commits and backpressure --------------------------------------------------------------
    def _set_paused(self, paused: bool) -> None:
        # Read by the consumer thread before its next poll (a plain attribute: atomic).
        self._paused = paused
        log.info("backpressure", paused=paused, in_flight=self.tracker.in_flight())

    async def commit(self) -> None:
        offsets = self.tracker.committable()
        if offsets:
            await self.consumer.commit(offsets)
            self.tracker.mark_committed(offsets)

    async def _commit_loop(self) -> None:
        """Backpressure is checked every tick; offsets are committed every COMMIT_INTERVAL_MS."""
        interval = self.settings.commit_interval_ms / 1000
        next_commit = time.monotonic() + interval
        while True:
            await asyncio.sleep(min(interval, 0.1))
            in_flight = self.tracker.in_flight()
            IN_FLIGHT.labels(topic=self.topic).set(in_flight)
            if self._paused and in_flight <= self.settings.max_in_flight_events // 2:
                self._set_paused(False)
            if time.monotonic() < next_commit:
                continue
            next_commit = time.monotonic() + interval
            try:
                await self.commit()
            except Exception as exc:
                log.warning("commit failed", topic=self.topic, error=f"{type(exc).__name__}: {exc}")
