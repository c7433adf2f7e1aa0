"""The park sweeper: parked events move on when what they wait for arrives (their client's
identity, or their deal's creation time), or after the configured wait: to the DLQ as
``unattributable`` (no identity), or on to an order created at the payment's time (no creation
time; counted as decided by rule).

One mechanism for both: every few seconds each process leases the ready parked events of its own
topics from the store (a lease, so two instances never take the same one) and hands them to the
engine, in the lane of their deal, behind live events of the same deal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from metrica_bridge.engine.intake import Intake
from metrica_bridge.engine.leases import PARK_LEASE_S, unlease
from metrica_bridge.logs import get_logger
from metrica_bridge.metrics import EVENTS_RELEASED, PARKED
from metrica_bridge.store.base import WAITS_CREATION, Identity, ParkedEvent, Store

log = get_logger("metrica_bridge.engine.parking")


class ParkSweeper:
    def __init__(
        self,
        intake: Intake,
        store: Store,
        topics: Collection[str],
        *,
        owner: str,
        max_wait_s: float,
        creation_max_wait_s: float | None = None,
        interval_s: float = 2.0,
        batch: int = 1_000,
    ) -> None:
        self._intake = intake
        self._owner = owner
        self._store = store
        self._topics = list(topics)
        self._max_wait = timedelta(seconds=max_wait_s)
        self._creation_max_wait = timedelta(
            seconds=max_wait_s if creation_max_wait_s is None else creation_max_wait_s
        )
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
            while (
                waited < self._interval_s and self._intake.released_in_progress() > self._batch // 2
            ):
                await asyncio.sleep(0.05)
                waited += 0.05

    async def sweep(self) -> int:
        store = self._store
        now = datetime.now(UTC)
        expired_before = now - self._max_wait
        creation_expired_before = now - self._creation_max_wait
        taken = await asyncio.to_thread(
            store.take_ready_parked,
            self._topics,
            self._owner,
            PARK_LEASE_S,
            expired_before,
            self._batch,
            creation_expired_before,
        )
        if not taken:
            PARKED.set(await asyncio.to_thread(store.parked_count))
            return 0
        # What cannot be handled now (the registry or the store down) is not left leased: the
        # heartbeat would renew its lease forever. Its lease ends, and a next sweep takes it.
        try:
            PARKED.set(await asyncio.to_thread(store.parked_count))
            identities = await asyncio.to_thread(
                store.identities, {p.client_uniq_id for p in taken}
            )
            await self._intake.resolve_parked(taken)
        except Exception:
            with contextlib.suppress(Exception):  # else they lapse with the lease
                await self._unlease(taken)
            raise
        released = expired = 0
        failed: list[ParkedEvent] = []
        error: Exception | None = None
        for parked in taken:
            try:
                if self._release(parked, identities, now, expired_before, creation_expired_before):
                    released += 1
                else:
                    expired += 1
            except Exception as exc:
                failed.append(parked)
                error = exc
        if failed:
            log.warning(
                "parked events not released; their lease ends",
                count=len(failed),
                error=f"{type(error).__name__}: {error}",
            )
            with contextlib.suppress(Exception):  # else they lapse with the lease
                await self._unlease(failed)
        log.info("park sweep", released=released, unattributable=expired)
        return len(taken)

    async def _unlease(self, parked: list[ParkedEvent]) -> None:
        await unlease(self._store, [p.event_id for p in parked])

    def _release(
        self,
        parked: ParkedEvent,
        identities: dict[str, Identity],
        now: datetime,
        expired_before: datetime,
        creation_expired_before: datetime,
    ) -> bool:
        """Hand one leased event to the engine: True when it moves on, False when it goes to
        the DLQ as ``unattributable``."""
        if not expires(parked, identities.get(parked.client_uniq_id), expired_before):
            # Ready, as far as the store knew a moment ago; the engine looks again (consent
            # may have been withdrawn since) and puts it back in the park if it must wait.
            # A payment waiting for its deal's creation time is taken when the order has one,
            # or when it waited its whole time: then the order is created at its time.
            event = self._intake.parse_parked(parked)
            waited_all = (
                parked.waits_for == WAITS_CREATION and parked.parked_at < creation_expired_before
            )
            self._intake.release(parked, event, None, creation_waited=waited_all)
            if event is not None:
                EVENTS_RELEASED.labels(topic=parked.topic).inc()
                return True
        else:
            waited = int((now - parked.parked_at).total_seconds())
            self._intake.release(
                parked,
                self._intake.parse_parked(parked),
                f"no ClientID, phone or email for the client after {waited}s",
            )
        return False


def expires(parked: ParkedEvent, identity: Identity | None, expired_before: datetime) -> bool:
    """A leased parked event goes to the DLQ as ``unattributable`` only when it waited its
    whole identity wait (``PARK_MAX_WAIT_S``, whatever it parked for: a payment waiting for its
    deal's creation time whose client lost every identifier meanwhile ends here too) and its
    client still has no identifier. One leased as ready whose identity no longer binds when read
    (it changed in between) is not expired: it waits on."""
    if identity is not None and identity.has_identifier():
        return False
    return parked.parked_at < expired_before
