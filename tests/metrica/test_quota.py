"""The quota governor: parallel and per-second caps, the shared daily budget, its pace, and
waiting for the next quota day instead of failing (DESIGN.md §4)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from metrica_bridge.metrica.errors import BudgetExhausted
from metrica_bridge.metrica.quota import InMemoryBudget, QuotaGovernor
from metrica_bridge.metrics import REGISTRY

DAY = 86_400.0
LATE = datetime(2025, 3, 2, 23, 0, tzinfo=UTC).timestamp()  # 23:00 GMT


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def gauge(name: str) -> float:
    value = REGISTRY.get_sample_value(f"metrica_bridge_{name}")
    assert value is not None
    return value


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


async def test_spent_budget_waits_for_the_next_quota_day_instead_of_failing() -> None:
    clock = Clock(LATE)
    governor = QuotaGovernor(
        requests_per_second=10_000, daily_budget=2, reserve=0, clock=clock, poll_s=0.01
    )
    for _ in range(2):
        async with governor.request():
            pass
    governor.demand = lambda: True

    async def later() -> None:
        async with governor.request(paced=True):
            pass

    task = asyncio.create_task(later())
    await asyncio.sleep(0.05)
    assert not task.done()  # waiting for the reset, not sending, not failing
    assert governor.waiting_for_quota()
    assert gauge("metrica_quota_waiting") == 1
    assert gauge("metrica_daily_quota_remaining") == 0
    assert gauge("metrica_quota_reset_seconds") == pytest.approx(3600)
    clock.now = LATE + 3601  # 00:00:01 GMT: a new quota day
    await asyncio.wait_for(task, 2)
    assert governor.attempts == 3
    assert governor.remaining() == 1
    assert not governor.waiting_for_quota()
    assert gauge("metrica_quota_waiting") == 0


async def test_command_line_tools_fail_at_once_with_the_reset_time() -> None:
    clock = Clock(LATE)
    governor = QuotaGovernor(
        requests_per_second=10_000, daily_budget=1, clock=clock, wait_for_quota=False
    )
    async with governor.request():
        pass
    with pytest.raises(BudgetExhausted) as caught:
        async with governor.request():
            pass
    assert caught.value.reset_at == datetime(2025, 3, 3, tzinfo=UTC)


async def test_paced_requests_leave_the_reserve_to_the_others() -> None:
    clock = Clock(LATE)
    governor = QuotaGovernor(
        requests_per_second=10_000, daily_budget=10, reserve=0.3, clock=clock, poll_s=0.01
    )
    for _ in range(7):
        await _when_due(governor, clock)
    assert clock.now < LATE + 3600  # all within the day
    paced = asyncio.create_task(_one(governor, paced=True))
    await asyncio.sleep(0.05)
    assert not paced.done()  # 7 of 10 spent: the pace's share is gone
    for _ in range(3):  # retries, reconciliation, schema-sync: the reserve
        await asyncio.wait_for(_one(governor, paced=False), 1)
    assert governor.remaining() == 0
    paced.cancel()


async def _one(governor: QuotaGovernor, *, paced: bool) -> None:
    async with governor.request(paced=paced):
        pass


async def _when_due(governor: QuotaGovernor, clock: Clock) -> float:
    """One paced request, the fake clock moved on by what the governor says it must wait."""
    wait = governor.send_delay()
    clock.now += wait
    await asyncio.wait_for(_one(governor, paced=True), 1)
    return wait


async def test_paced_requests_are_spread_over_what_is_left_of_the_day() -> None:
    clock = Clock(LATE)  # one hour left, 9 requests for the pace: one per 400 s
    governor = QuotaGovernor(
        requests_per_second=10_000, daily_budget=10, reserve=0.1, clock=clock, poll_s=0.01
    )
    waits = [await _when_due(governor, clock) for _ in range(3)]  # the burst
    assert waits == [0, 0, 0]
    assert gauge("metrica_pace_requests_per_second") == pytest.approx(6 / 3600, rel=0.01)
    fourth = asyncio.create_task(_one(governor, paced=True))
    await asyncio.sleep(0.05)
    assert not fourth.done()  # the burst is spent
    clock.now += governor.send_delay()
    await asyncio.wait_for(fourth, 2)
    # From then on one interval apart: what is left over the time left.
    for left in (5, 4, 3):
        interval = (LATE + 3600 - clock.now) / left
        assert await _when_due(governor, clock) == pytest.approx(interval, rel=0.35)
    assert governor.remaining() == 3


async def test_shared_backend_is_one_budget_and_one_pace() -> None:
    clock = Clock(LATE)
    backend = InMemoryBudget()
    first, second = (
        QuotaGovernor(requests_per_second=10_000, daily_budget=20, backend=backend, clock=clock)
        for _ in range(2)
    )
    for governor in (first, second, first):  # the burst, shared
        await _when_due(governor, clock)
    assert second.send_delay() == 0  # it has not seen the others' requests yet
    blocked = asyncio.create_task(_one(second, paced=True))
    await asyncio.sleep(0.05)
    assert not blocked.done()  # the shared state says: not yet
    assert second.send_delay() > 100
    assert await first.refresh() == 17
    blocked.cancel()


async def test_metrica_daily_429_stops_everyone_until_the_reset() -> None:
    clock = Clock(LATE)
    backend = InMemoryBudget()
    governor = QuotaGovernor(
        requests_per_second=10_000, daily_budget=100, backend=backend, clock=clock, poll_s=0.01
    )
    await governor.metrica_quota_spent()
    assert governor.remaining() == 0
    other = QuotaGovernor(daily_budget=100, backend=backend, clock=clock)
    assert await other.refresh() == 0
    task = asyncio.create_task(_one(governor, paced=False))
    await asyncio.sleep(0.05)
    assert not task.done()
    clock.now = LATE + 3600
    await asyncio.wait_for(task, 2)


async def test_a_daily_429_right_after_the_reset_is_a_short_pause_not_a_lost_day() -> None:
    midnight = LATE + 3600
    clock = Clock(midnight + 5)  # Metrica's clock may not have reached 00:00 yet
    governor = QuotaGovernor(requests_per_second=10_000, daily_budget=100, clock=clock, poll_s=0.01)
    await governor.metrica_quota_spent()
    assert governor.remaining() == 100  # the day is not written off
    assert 0 < governor.send_delay() <= 60
    task = asyncio.create_task(_one(governor, paced=False))
    await asyncio.sleep(0.05)
    assert not task.done()
    clock.now += 61
    await asyncio.wait_for(task, 2)


async def test_short_quota_days_reset_on_their_own_boundaries() -> None:
    clock = Clock(1_000_000.0)  # quota day 8333 of 120 s, ending at 1,000,080
    governor = QuotaGovernor(
        requests_per_second=10_000,
        daily_budget=3,
        reserve=0,
        quota_day_s=120,
        clock=clock,
        poll_s=0.01,
    )
    for _ in range(3):
        await _one(governor, paced=False)
    task = asyncio.create_task(_one(governor, paced=False))
    await asyncio.sleep(0.05)
    assert not task.done()
    assert governor.reset_at().timestamp() == 1_000_080
    clock.now = 1_000_080.0
    await asyncio.wait_for(task, 2)
    assert governor.remaining() == 2


async def test_projection_follows_the_recent_rate() -> None:
    clock = Clock(LATE)
    governor = QuotaGovernor(requests_per_second=10_000, daily_budget=5_000, clock=clock)
    for _ in range(61):  # one request a second for a minute
        await _one(governor, paced=False)
        clock.now += 1
    # 61 used, ~1 request/s, 3,540 s left: about 3,600 by the reset.
    assert gauge("metrica_requests_projected") == pytest.approx(61 + 3539, rel=0.02)
    assert gauge("metrica_daily_budget") == 5_000


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
