"""Dedupe by event id: an event already delivered, skipped or dead-lettered is not processed
again (redelivery after a crash, CRM outbox retries, DLQ replays).

Lookups are batched (one store query for many events); outcomes this process recorded recently
are remembered so a duplicate arriving right behind its original needs no query at all.
"""

from __future__ import annotations

from collections import OrderedDict

from metrica_bridge.engine.loader import BatchLoader
from metrica_bridge.store.base import LedgerEntry, Store


class Dedupe:
    def __init__(self, store: Store, remember: int = 100_000) -> None:
        self._loader: BatchLoader[str, LedgerEntry | None] = BatchLoader(
            store.outcomes, default=None
        )
        self._recent: OrderedDict[str, str] = OrderedDict()
        self._remember = remember

    async def seen(self, event_id: str) -> str | None:
        """The outcome already recorded for this event id, or None."""
        outcome = self._recent.get(event_id)
        if outcome is not None:
            return outcome
        entry = await self._loader.load(event_id)
        return entry.outcome if entry is not None else None

    def remember(self, entries: list[LedgerEntry]) -> None:
        for entry in entries:
            self._recent[entry.event_id] = entry.outcome
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)
