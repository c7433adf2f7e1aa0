"""The pace of the daily budget as pure functions of budget, time and reserve (metrica/pace.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrica_bridge.metrica.pace import (
    Budget,
    QuotaDays,
    Slot,
    decide,
    pace,
    paced_delay,
    reserve_requests,
)

DAY = 86_400
NOON = 20_000 * DAY + DAY / 2  # 12:00 GMT on some day


def test_gmt_days_reset_at_midnight_and_keep_the_iso_date_key() -> None:
    days = QuotaDays()
    assert days.reset_at(NOON) == 20_001 * DAY
    assert days.started_at(NOON) == 20_000 * DAY
    assert days.key(NOON) == "2024-10-04"  # the key the store used before quota days
    assert days.key(20_001 * DAY) != days.key(20_001 * DAY - 0.001)


def test_short_days_are_intervals_of_unix_time() -> None:
    days = QuotaDays(120)
    assert days.index(1_000_000) == 8_333
    assert days.reset_at(1_000_000) == 8_334 * 120
    assert days.key(1_000_000) == "8333@120s"
    assert days.key(8_334 * 120) == "8334@120s"
    with pytest.raises(ValueError, match="at least one second"):
        QuotaDays(0)


def test_reserve_is_rounded_up_and_leaves_the_pace_something() -> None:
    assert reserve_requests(5_000, 0.1) == 500
    assert reserve_requests(5_000, 0.0) == 0
    assert reserve_requests(15, 0.1) == 2
    assert reserve_requests(1, 0.5) == 0
    assert reserve_requests(2, 0.9) == 1
    with pytest.raises(ValueError, match="fraction of the budget"):
        reserve_requests(100, 1.0)


def test_pace_spreads_what_is_left_less_the_reserve_over_the_time_left() -> None:
    # The numbers: 4,787 requests left for 17 hours, 10 % reserve of 5,000.
    assert pace(5_000, 500, 213, 17 * 3600) == pytest.approx(4_287 / 61_200)
    assert pace(5_000, 500, 0, DAY) * DAY == pytest.approx(4_500)
    assert pace(5_000, 500, 4_500, 3600) == 0.0  # only the reserve is left
    assert pace(5_000, 500, 4_900, 3600) == 0.0
    assert pace(100, 0, 99, 0.0) > 0  # the last second of the day is not a division by zero


def _budget(requests: int = 100, reserve: int = 10, burst: int = 3) -> Budget:
    return Budget(requests, reserve, burst)


def test_a_quiet_spell_lets_a_burst_go_then_requests_are_one_interval_apart() -> None:
    budget, reset = _budget(), NOON + 900.0  # 90 paced requests for 900 s: one per 10 s
    state, now, granted = Slot(), NOON, []
    while len(granted) < 4:
        now += paced_delay(state, budget, now=now, reset_at=reset)
        wait_early = decide(state, budget, now=now - 0.01, reset_at=reset, paced=True)
        decision = decide(state, budget, now=now, reset_at=reset, paced=True)
        assert decision.granted  # waiting what paced_delay said is always enough
        assert not wait_early.granted or now == NOON
        state = decision.state
        granted.append(now)
    assert granted[2] - granted[0] < 0.5  # three at once after a quiet spell
    assert 9.0 < granted[3] - granted[2] < 10.5  # then one interval apart
    assert state.used == 4


def test_unpaced_requests_are_counted_but_never_spaced() -> None:
    budget, reset = _budget(requests=5, reserve=2), NOON + 600.0
    state = Slot()
    for _ in range(5):
        decision = decide(state, budget, now=NOON, reset_at=reset, paced=False)
        assert decision.granted
        state = decision.state
    assert state.used == 5
    spent = decide(state, budget, now=NOON, reset_at=reset, paced=False)
    assert not spent.granted
    assert spent.exhausted
    assert spent.wait_s == pytest.approx(600.0)


def test_the_reserve_is_out_of_the_pace_but_not_out_of_reach() -> None:
    budget, reset = _budget(requests=10, reserve=3), NOON + 700.0
    state = Slot(used=7, next_at=0.0)
    paced = decide(state, budget, now=NOON, reset_at=reset, paced=True)
    assert not paced.granted
    assert paced.exhausted
    assert paced.wait_s == pytest.approx(700.0)
    assert decide(state, budget, now=NOON, reset_at=reset, paced=False).granted


@given(
    budget=st.integers(1, 6_000),
    reserve=st.floats(0.0, 0.5),
    day=st.sampled_from([60, 600, 86_400]),
    gaps=st.lists(st.floats(0.0, 5_000.0), min_size=1, max_size=300),
    paced=st.lists(st.booleans(), min_size=1, max_size=300),
)
def test_never_more_than_the_budget_in_a_quota_day(
    budget: int, reserve: float, day: int, gaps: list[float], paced: list[bool]
) -> None:
    limits = Budget(budget, reserve_requests(budget, reserve))
    days = QuotaDays(day)
    now, states, counted = 1_700_000_000.0, {}, {}
    for gap, is_paced in zip(gaps, paced * math.ceil(len(gaps) / len(paced)), strict=False):
        now += gap
        key = days.key(now)
        decision = decide(
            states.get(key, Slot()), limits, now=now, reset_at=days.reset_at(now), paced=is_paced
        )
        if decision.granted:
            states[key] = decision.state
            counted[key] = counted.get(key, 0) + 1
            if is_paced:
                assert decision.state.used <= budget - limits.reserve
    assert all(n <= budget for n in counted.values())


def test_steady_demand_spends_the_paced_budget_evenly_and_no_more() -> None:
    """A client asking for a paced request every second for a whole day gets the budget less
    the reserve, spread over the day (every hour gets its share), and never more."""
    budget, days = Budget(5_000, 500), QuotaDays()
    start = 20_000 * DAY
    state, per_hour = Slot(), [0] * 24
    now = float(start)
    while now < start + DAY:
        decision = decide(state, budget, now=now, reset_at=days.reset_at(now), paced=True)
        if decision.granted:
            state = decision.state
            per_hour[int((now - start) // 3600)] += 1
        now += 1.0
    assert 4_490 <= sum(per_hour) <= 4_500
    assert min(per_hour) >= 180, per_hour
    assert max(per_hour) <= 195, per_hour
