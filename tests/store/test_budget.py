"""The daily Metrica budget kept in the store is one budget for every process using it."""

from __future__ import annotations

import asyncio

import pytest

from metrica_bridge.metrica.errors import BudgetExhausted
from metrica_bridge.metrica.quota import QuotaGovernor
from metrica_bridge.store import Store
from metrica_bridge.store.budget import StoreBudget


async def test_two_governors_on_one_store_share_the_daily_budget(store: Store) -> None:
    governors = [
        QuotaGovernor(
            max_parallel=3, requests_per_second=1_000, daily_budget=5, backend=StoreBudget(store)
        )
        for _ in range(2)
    ]
    granted = 0

    async def attempt(governor: QuotaGovernor) -> None:
        nonlocal granted
        try:
            async with governor.request():
                granted += 1
        except BudgetExhausted:
            pass

    await asyncio.gather(*(attempt(governors[i % 2]) for i in range(8)))
    assert granted == 5
    assert await governors[0].refresh() == 0
    assert await governors[1].refresh() == 0
    with pytest.raises(BudgetExhausted):
        async with governors[1].request():
            pass


async def test_exhaust_marks_the_shared_day_spent(store: Store) -> None:
    budget = StoreBudget(store)
    governor = QuotaGovernor(requests_per_second=1_000, daily_budget=10, backend=budget)
    async with governor.request():
        pass
    await governor.exhaust_today()
    other = QuotaGovernor(requests_per_second=1_000, daily_budget=10, backend=StoreBudget(store))
    assert await other.refresh() == 0
