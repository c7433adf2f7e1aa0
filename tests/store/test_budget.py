"""The daily Metrica budget kept in the store is one budget, at one pace, for every process
using it (several instances on PostgreSQL, several --topic processes on one SQLite file)."""

from __future__ import annotations

import asyncio

from metrica_bridge.metrica.quota import QuotaGovernor
from metrica_bridge.store import Store
from metrica_bridge.store.budget import StoreBudget

LATE = 1_740_956_400.0  # 2025-03-02 23:00 GMT


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _governor(store: Store, clock: Clock, budget: int = 5) -> QuotaGovernor:
    return QuotaGovernor(
        requests_per_second=1_000,
        daily_budget=budget,
        reserve=0,
        backend=StoreBudget(store),
        clock=clock,
        poll_s=0.01,
    )


async def _one(governor: QuotaGovernor, paced: bool = False) -> None:
    async with governor.request(paced=paced):
        pass


async def test_two_governors_on_one_store_share_the_daily_budget(store: Store) -> None:
    clock = Clock(LATE)
    governors = [_governor(store, clock) for _ in range(2)]
    tasks = [asyncio.create_task(_one(governors[i % 2])) for i in range(8)]
    await asyncio.sleep(0.3)
    assert sum(t.done() for t in tasks) == 5  # the other three wait for the next quota day
    assert await governors[0].refresh() == 0
    assert await governors[1].refresh() == 0
    clock.now = LATE + 3600
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert await governors[0].refresh() == 2


async def test_two_governors_on_one_store_share_one_pace(store: Store) -> None:
    clock = Clock(LATE)  # an hour left, 100 requests: one every 36 s after the burst of 3
    first, second = (_governor(store, clock, budget=100) for _ in range(2))
    for governor in (first, second, first):
        await asyncio.wait_for(_one(governor, paced=True), 1)
    late = asyncio.create_task(_one(second, paced=True))
    await asyncio.sleep(0.1)
    assert not late.done()  # the burst was shared, so is the wait
    clock.now += second.send_delay()
    await asyncio.wait_for(late, 2)
    assert 30 < clock.now - LATE < 40


async def test_metrica_saying_spent_marks_the_shared_day_spent(store: Store) -> None:
    clock = Clock(LATE)
    governor = _governor(store, clock, budget=10)
    await _one(governor)
    await governor.metrica_quota_spent()
    other = _governor(store, clock, budget=10)
    assert await other.refresh() == 0
