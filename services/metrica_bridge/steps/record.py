"""Record outcomes: one atomic store write for a whole round of finished events, then the
metrics.

Events complete only after their outcome is durable; the offset tracker hears about them after
that, so a crash re-delivers exactly the events whose outcome was not yet written.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from metrica_bridge.logs import get_logger
from metrica_bridge.metrics import EVENTS_PROCESSED
from metrica_bridge.store.base import Changes, Store, StoreError

log = get_logger("metrica_bridge.steps.record")


class Recorder:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def apply(self, changes: Changes, outcomes: Counter[tuple[str, str]]) -> None:
        """Write ``changes``, retrying in place on store errors (a PostgreSQL deadlock, a
        failover): what Metrica already accepted must be recorded, not handled again from
        scratch — that would send it twice. ``outcomes`` counts events by (topic, outcome)."""
        delay = 0.05
        while changes:
            try:
                await asyncio.to_thread(self._store.apply, changes)
                break
            except StoreError as exc:
                log.warning("recording outcomes failed; retrying", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        for (topic, outcome), count in outcomes.items():
            EVENTS_PROCESSED.labels(topic=topic, outcome=outcome).inc(count)
