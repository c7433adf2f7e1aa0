"""Record outcomes: one atomic store write per group of events, then the metrics.

Events complete only after their outcome is durable; the offset tracker hears about them after
that, so a crash re-delivers exactly the events whose outcome was not yet written.
"""

from __future__ import annotations

from metrica_bridge.engine.loader import BatchCall
from metrica_bridge.metrics import EVENTS_PROCESSED
from metrica_bridge.store.base import Changes, Store


def _merge(batch: list[Changes]) -> Changes:
    merged = Changes()
    for changes in batch:
        merged.ledger.extend(changes.ledger)
        merged.orders.extend(changes.orders)
        merged.contacts_uploaded.update(changes.contacts_uploaded)
        merged.release_claims.extend(changes.release_claims)
        merged.park.extend(changes.park)
        merged.unpark.extend(changes.unpark)
        merged.unlease.extend(changes.unlease)
    return merged


class Recorder:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._apply: BatchCall[Changes, None] = BatchCall(self._write, max_batch=2_000)

    def _write(self, batch: list[Changes]) -> list[None]:
        # Orders of one group are distinct deals: claims serialise updates of one order.
        self._store.apply(_merge(batch))
        return [None] * len(batch)

    async def apply(self, changes: Changes) -> None:
        if changes:
            await self._apply(changes)
        for entry in changes.ledger:
            EVENTS_PROCESSED.labels(topic=entry.topic, outcome=entry.outcome).inc()
