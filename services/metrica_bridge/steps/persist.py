"""Persist finished work: one atomic store write for a whole round of finished events (their
outcomes, order states, parking moves), then the metrics.

Events complete only after their outcome is durable; the offset tracker hears about them after
that, so a crash re-delivers exactly the events whose outcome was not yet written.

A round is written as one transaction, but it is made of one part per event (issue 16): when
the store refuses the data of the round (``StoreRefused``: a value it cannot hold) the parts are
written by halves until the part it refuses is alone, and when a claim turns out lost
(``ClaimLost``: fencing) the parts writing those orders are left out. Either way the others are
written, and the caller hears which parts were not and why: one event's data never holds the
outcomes of the rest (nor, looping, every topic of the process).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from metrica_bridge.logs import get_logger
from metrica_bridge.metrics import EVENTS_PROCESSED
from metrica_bridge.outcomes import Outcome
from metrica_bridge.store.base import (
    Changes,
    ClaimLost,
    LedgerEntry,
    OrderState,
    ParkedEvent,
    Store,
    StoreError,
    StoreRefused,
    merge_changes,
)

log = get_logger("metrica_bridge.steps.persist")


class Finished(Protocol):
    """What a finished event writes (the engine's work item has these fields)."""

    @property
    def ledger(self) -> LedgerEntry | None: ...
    @property
    def order_state(self) -> OrderState | None: ...
    @property
    def contact_uploaded(self) -> tuple[str, str] | None: ...
    @property
    def claim(self) -> str | None: ...
    @property
    def epoch(self) -> int | None: ...
    @property
    def park(self) -> ParkedEvent | None: ...
    @property
    def unpark(self) -> bool: ...
    @property
    def unlease(self) -> bool: ...
    @property
    def ledger_id(self) -> str: ...


def changes_of(work: Finished, changes: Changes) -> Changes:
    """Add what a finished event writes to ``changes`` (its order state fenced by its claim,
    which the same transaction gives back) and return them."""
    if work.ledger is not None:
        changes.ledger.append(work.ledger)
    if work.order_state is not None:
        changes.orders.append(work.order_state)
    if work.contact_uploaded is not None:
        client, fingerprint = work.contact_uploaded
        changes.contacts_uploaded[client] = fingerprint
    if work.claim is not None:
        changes.release_claims.append(work.claim)
        if work.epoch is not None:
            changes.epochs[work.claim] = work.epoch
    if work.park is not None:
        changes.park.append(work.park)
    if work.unpark:
        changes.unpark.append(work.ledger_id)
    if work.unlease:
        changes.unlease.append(work.ledger_id)
    return changes


class Recorder:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def apply(self, changes: Changes, outcomes: Counter[tuple[str, Outcome]]) -> None:
        """Write ``changes``, retrying in place on store errors (a PostgreSQL deadlock, a
        failover): what Metrica already accepted must be recorded, not handled again from
        scratch — that would send it twice. ``outcomes`` counts events by (topic, outcome).
        ``StoreRefused`` and ``ClaimLost`` are raised: trying again cannot help."""
        await self._write(changes)
        self.count(outcomes)

    async def record(
        self, whole: Changes, parts: Callable[[], Sequence[Changes]]
    ) -> dict[int, StoreError]:
        """Write ``whole`` (what ``parts()`` would make, together) in one transaction; when the
        store refuses it or a claim was lost, write the parts instead, leaving out what must
        be. Return the index of each part left out, with the reason: ``ClaimLost`` (its orders'
        claims are another owner's now) or ``StoreRefused`` (refused on its own)."""
        try:
            await self._write(whole)
            return {}
        except (ClaimLost, StoreRefused) as exc:
            log.warning("recording a round refused; writing it event by event", error=str(exc))
        return await self._isolate(parts())

    async def _isolate(self, parts: Sequence[Changes]) -> dict[int, StoreError]:
        failed: dict[int, StoreError] = {}
        groups = [list(range(len(parts)))]
        while groups:
            group = groups.pop(0)
            try:
                await self._write(merge_changes(parts[i] for i in group))
            except ClaimLost as exc:
                lost = [i for i in group if exc.deals & {o.deal_id for o in parts[i].orders}]
                for i in lost or group:
                    failed[i] = exc
                rest = [i for i in group if i not in failed]
                if rest:
                    groups.insert(0, rest)
            except StoreRefused as exc:
                if len(group) == 1:
                    failed[group[0]] = exc
                    continue
                half = len(group) // 2
                groups[:0] = [group[:half], group[half:]]
        return failed

    def count(self, outcomes: Counter[tuple[str, Outcome]]) -> None:
        for (topic, outcome), count in outcomes.items():
            EVENTS_PROCESSED.labels(topic=topic, outcome=outcome).inc(count)

    async def _write(self, changes: Changes) -> None:
        delay = 0.05
        while changes:
            try:
                await asyncio.to_thread(self._store.apply, changes)
                return
            except (ClaimLost, StoreRefused):
                raise
            except StoreError as exc:
                log.warning("recording outcomes failed; retrying", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
