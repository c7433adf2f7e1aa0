"""The daily Metrica request budget counted in the shared store, so every process on one store
(several instances on PostgreSQL, or ``--topic`` processes on one SQLite file) spends ONE budget
at ONE pace. It is the ``BudgetBackend`` the quota governor takes (``metrica.quota``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from metrica_bridge.metrica.pace import Decision, Slot
from metrica_bridge.store.base import QuotaState, Store


class StoreBudget:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def take(self, day: str, decide: Callable[[Slot], Decision]) -> Decision:
        decided: list[Decision] = []

        def change(used: int, next_at: float) -> QuotaState | None:
            decided[:] = [decide(Slot(used, next_at))]
            state = decided[0].state
            return (state.used, state.next_at) if decided[0].granted else None

        await asyncio.to_thread(self._store.update_quota, day, change)
        return decided[0]

    async def state(self, day: str) -> Slot:
        used, next_at = await asyncio.to_thread(self._store.quota_state, day)
        return Slot(used, next_at)

    async def exhaust(self, day: str, requests: int) -> None:
        await asyncio.to_thread(
            self._store.update_quota, day, lambda used, next_at: (max(used, requests), next_at)
        )
