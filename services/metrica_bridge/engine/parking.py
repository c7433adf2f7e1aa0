"""The park sweeper: parked events move on when their client's identity arrives, or go to the
DLQ as ``unattributable`` after the configured wait.

One mechanism for both: every few seconds each process leases the ready parked events of its own
topics from the store (a lease, so two instances never take the same one) and feeds them to the
per-key scheduler of their topic, behind live events of the same deal.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from metrica_bridge.engine.pipeline import Parsed, Pipeline
from metrica_bridge.engine.runner import TopicRunner
from metrica_bridge.logs import get_logger
from metrica_bridge.metrics import EVENTS_RELEASED, PARKED, ErrorClass
from metrica_bridge.steps.dlq import SourceRecord
from metrica_bridge.store.base import ParkedEvent

log = get_logger("metrica_bridge.engine.parking")

LEASE_S = 30.0  # renewed with the order claims while the event is being handled


class ParkSweeper:
    def __init__(
        self,
        pipeline: Pipeline,
        runners: Mapping[str, TopicRunner],
        *,
        max_wait_s: float,
        interval_s: float = 2.0,
        batch: int = 1_000,
    ) -> None:
        self._pipeline = pipeline
        self._runners = runners
        self._max_wait = timedelta(seconds=max_wait_s)
        self._interval_s = interval_s
        self._batch = batch

    async def run(self) -> None:
        while True:
            taken = 0
            try:
                taken = await self.sweep()
            except Exception as exc:
                log.warning("park sweep failed", error=f"{type(exc).__name__}: {exc}")
            if taken < self._batch:
                await asyncio.sleep(self._interval_s)
                continue
            # A full batch: more are ready. Sweeping only every interval capped releases at
            # batch/interval events/s, the bottleneck on a backlog (docs/benchmarks.md); go on
            # once most of this batch is handled, so released events never pile up in memory
            # (nor outlive their lease and get taken twice).
            waited = 0.0
            while waited < self._interval_s and self._released_in_progress() > self._batch // 2:
                await asyncio.sleep(0.05)
                waited += 0.05

    def _released_in_progress(self) -> int:
        """Released events queued or running: scheduler jobs beyond the live, tracked ones."""
        return sum(max(0, len(r.scheduler) - r.tracker.in_flight()) for r in self._runners.values())

    async def sweep(self) -> int:
        store = self._pipeline.store
        expired_before = datetime.now(UTC) - self._max_wait
        taken = await asyncio.to_thread(
            store.take_ready_parked,
            list(self._runners),
            self._pipeline.owner,
            LEASE_S,
            expired_before,
            self._batch,
        )
        PARKED.set(await asyncio.to_thread(store.parked_count))
        if not taken:
            return 0
        identities = await asyncio.to_thread(store.identities, {p.client_uniq_id for p in taken})
        released = expired = 0
        for parked in taken:
            runner = self._runners[parked.topic]
            identity = identities.get(parked.client_uniq_id)
            source = _source(parked)
            if identity is not None and identity.has_identifier():
                outcome = self._pipeline.parse(source)
                if isinstance(outcome, Parsed):
                    # consumed_at 0: it has waited in the park already, so it is overdue and
                    # leaves with the next upload instead of lingering again (which capped
                    # releases at one batch per linger under a backlog).
                    again = Parsed(outcome.source, outcome.event, 0.0, released=True)
                    runner.submit_released(
                        parked.deal_id, source, functools.partial(self._pipeline.handle, again)
                    )
                    EVENTS_RELEASED.labels(topic=parked.topic).inc()
                    released += 1
                    continue
            expired += 1
            runner.submit_released(
                parked.deal_id, source, functools.partial(self._unattributable, parked, source)
            )
        log.info("park sweep", released=released, unattributable=expired)
        return len(taken)

    async def _unattributable(self, parked: ParkedEvent, source: SourceRecord) -> None:
        waited = datetime.now(UTC) - parked.parked_at
        await self._pipeline.dead_letter(
            source,
            ErrorClass.UNATTRIBUTABLE,
            f"no ClientID, phone or email for the client after {int(waited.total_seconds())}s",
            parked.event_id,
            released=True,
        )


def _source(parked: ParkedEvent) -> SourceRecord:
    return SourceRecord(
        topic=parked.topic,
        partition=parked.partition,
        offset=parked.offset,
        key=parked.key,
        value=parked.value,
        headers=parked.headers,
        timestamp_ms=parked.timestamp_ms,
    )
