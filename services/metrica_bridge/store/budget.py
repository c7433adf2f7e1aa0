"""The daily Metrica request budget counted in the shared store, so every process on one store
(several instances on PostgreSQL, or ``--topic`` processes on one SQLite file) spends ONE budget.
It is the ``BudgetBackend`` the quota governor takes (``metrica.quota``)."""

from __future__ import annotations

import asyncio
from datetime import date

from metrica_bridge.store.base import Store


class StoreBudget:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def take(self, day: date, limit: int) -> int | None:
        key = day.isoformat()
        if not await asyncio.to_thread(self._store.take_quota, key, limit, 1):
            return None
        return max(0, limit - await asyncio.to_thread(self._store.quota_used, key))

    async def give_back(self, day: date) -> None:
        # The store only counts up: a request cancelled before it was sent stays counted.
        # Erring on the side of the quota costs one request of budget, never a 429.
        return None

    async def exhaust(self, day: date, limit: int) -> None:
        key = day.isoformat()
        left = limit - await asyncio.to_thread(self._store.quota_used, key)
        if left > 0:
            await asyncio.to_thread(self._store.take_quota, key, limit, left)

    async def used(self, day: date) -> int:
        return await asyncio.to_thread(self._store.quota_used, day.isoformat())
