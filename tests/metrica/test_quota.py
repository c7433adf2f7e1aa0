from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from metrica_bridge.metrica.errors import BudgetExhausted
from metrica_bridge.metrica.quota import InMemoryBudget, QuotaGovernor


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_at_most_max_parallel_in_flight() -> None:
    governor = QuotaGovernor(max_parallel=3, requests_per_second=10_000, daily_budget=1_000)
    peak = 0

    async def one() -> None:
        nonlocal peak
        async with governor.request():
            peak = max(peak, governor.in_flight)
            await asyncio.sleep(0.005)

    await asyncio.gather(*(one() for _ in range(40)))
    assert peak == 3
    assert governor.max_in_flight_seen == 3
    assert governor.attempts == 40
    assert governor.remaining() == 960


async def test_budget_spent_fails_fast_with_reset_time() -> None:
    clock = Clock(datetime(2025, 3, 2, 23, 0, tzinfo=UTC))
    governor = QuotaGovernor(requests_per_second=10_000, daily_budget=2, utcnow=clock)
    for _ in range(2):
        async with governor.request():
            pass
    with pytest.raises(BudgetExhausted) as caught:
        async with governor.request():
            pass
    assert caught.value.reset_at == datetime(2025, 3, 3, tzinfo=UTC)
    assert governor.attempts == 2
    assert governor.remaining() == 0
    assert governor.budget_pressure() == 1.0
    assert governor.linger_factor() == governor.max_linger_factor
    clock.now += timedelta(hours=1)  # 00:00 GMT: a new day
    assert governor.remaining() == 2
    async with governor.request():
        pass


async def test_budget_spent_waits_for_reset_within_deadline() -> None:
    clock = Clock(datetime(2025, 3, 2, 23, 59, 59, tzinfo=UTC))
    governor = QuotaGovernor(
        requests_per_second=10_000, daily_budget=1, utcnow=clock, reset_poll_s=0.01
    )
    async with governor.request():
        pass

    async def later() -> None:
        async with governor.request(wait_until=clock.now + timedelta(hours=1)):
            pass

    task = asyncio.create_task(later())
    await asyncio.sleep(0.05)
    assert not task.done()  # waiting for the reset, not sending
    clock.now = datetime(2025, 3, 3, 0, 0, 1, tzinfo=UTC)
    await asyncio.wait_for(task, 2)
    assert governor.attempts == 2


async def test_cancelled_while_queued_gives_budget_back() -> None:
    governor = QuotaGovernor(max_parallel=1, requests_per_second=10_000, daily_budget=10)
    release = asyncio.Event()

    async def hold() -> None:
        async with governor.request():
            await release.wait()

    async def queued() -> None:
        async with governor.request():
            pass

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(queued())
    await asyncio.sleep(0.01)
    assert governor.remaining() == 8
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert governor.remaining() == 9
    release.set()
    await holder


async def test_linger_stretches_as_budget_runs_low() -> None:
    governor = QuotaGovernor(requests_per_second=10_000, daily_budget=20)
    factors = []
    for _ in range(19):
        async with governor.request():
            pass
        factors.append(governor.linger_factor())
    assert factors[0] == 1.0
    assert factors == sorted(factors)
    assert factors[-1] == 10.0  # 1 of 20 left: 0.5 / 0.05


async def test_shared_backend_spans_governors() -> None:
    backend = InMemoryBudget()
    first = QuotaGovernor(requests_per_second=10_000, daily_budget=3, backend=backend)
    second = QuotaGovernor(requests_per_second=10_000, daily_budget=3, backend=backend)
    for governor in (first, second, first):
        async with governor.request():
            pass
    with pytest.raises(BudgetExhausted):
        async with second.request():
            pass
    assert await first.refresh() == 0


async def test_exhaust_today_stops_everyone() -> None:
    governor = QuotaGovernor(requests_per_second=10_000, daily_budget=100)
    await governor.exhaust_today()
    assert governor.remaining() == 0
    with pytest.raises(BudgetExhausted):
        async with governor.request():
            pass


def test_rejects_more_than_three_parallel() -> None:
    with pytest.raises(ValueError, match="max_parallel"):
        QuotaGovernor(max_parallel=4)


async def test_requests_per_second_cap_spaces_requests() -> None:
    governor = QuotaGovernor(requests_per_second=50, daily_budget=100)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(11):
        async with governor.request():
            pass
    # 11 requests at 50/s with a burst of 1 need at least 10 intervals of 20 ms.
    assert loop.time() - started >= 0.19
