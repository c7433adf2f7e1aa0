"""Dedupe by event id: an event already delivered, skipped or dead-lettered is not processed
again (redelivery after a crash, CRM outbox retries, DLQ replays).

One store query serves a whole round of events; outcomes this process recorded recently are
remembered, so a duplicate arriving right behind its original needs no query at all.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from metrica_bridge.outcomes import Outcome
from metrica_bridge.store.base import LedgerEntry, Store


class Dedupe:
    def __init__(self, store: Store, remember: int = 20_000) -> None:
        self._store = store
        self._recent: OrderedDict[str, Outcome] = OrderedDict()
        self._remember = remember

    def known(self, ids: Iterable[str]) -> tuple[dict[str, Outcome], list[str]]:
        """Outcomes remembered in memory, and the ids the store must be asked about."""
        found: dict[str, Outcome] = {}
        missing: list[str] = []
        recent = self._recent
        for event_id in ids:
            outcome = recent.get(event_id)
            if outcome is None:
                missing.append(event_id)
            else:
                found[event_id] = outcome
        return found, missing

    def recorded(self, ids: Sequence[str]) -> dict[str, Outcome]:
        """The store's outcomes of these ids (blocking: call it from a worker thread)."""
        if not ids:
            return {}
        return {event_id: entry.outcome for event_id, entry in self._store.outcomes(ids).items()}

    def remember(self, entries: Iterable[LedgerEntry]) -> None:
        recent = self._recent
        for entry in entries:
            recent[entry.event_id] = entry.outcome
            recent.move_to_end(entry.event_id)
        while len(recent) > self._remember:
            recent.popitem(last=False)
