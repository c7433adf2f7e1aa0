"""The quota governor: one per token, shared by everything in the process (DESIGN.md §4).

Every request attempt passes three gates, in this order:

1. the daily budget and its pace (:mod:`metrica_bridge.metrica.pace`), decided in the shared
   store so that every process of one login and counter spends one budget at one pace. First
   attempts of uploads are *paced*; everything else (retries, reconciliation, schema-sync,
   counter lookups, setup probes) is only counted, and may use the reserve;
2. at most ``max_parallel`` (≤ 3, metrica-api.md §12) requests in flight, an asyncio semaphore;
3. a requests-per-second cap, a token bucket entered while holding the slot so that requests
   freed together do not burst.

When the budget is spent (ours, or Metrica answered a daily 429) the service *waits* for the
next quota day: never an error, never a dead letter (DESIGN.md §4). Command-line tools are
built with ``wait_for_quota=False`` instead and fail at once with :class:`BudgetExhausted`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Protocol

from metrica_bridge.metrica.errors import BudgetExhausted
from metrica_bridge.metrica.pace import (
    PACE_BURST,
    Budget,
    Decision,
    QuotaDays,
    Slot,
    decide,
    pace,
    paced_delay,
    reserve_requests,
)
from metrica_bridge.metrics import (
    DAILY_BUDGET,
    QUOTA_PACE,
    QUOTA_PROJECTED,
    QUOTA_REMAINING,
    QUOTA_RESET,
    QUOTA_WAITING,
)


class BudgetBackend(Protocol):
    """Keeps each quota day's :class:`Slot`. ``take`` must run ``decide`` and store a granted
    decision's state atomically with respect to every other user of the same budget."""

    async def take(self, day: str, decide: Callable[[Slot], Decision]) -> Decision: ...

    async def state(self, day: str) -> Slot: ...

    async def exhaust(self, day: str, requests: int) -> None:
        """Metrica said the daily quota is spent: count ``day`` as used up."""
        ...


class InMemoryBudget:
    """One process's count (tests, command-line tools)."""

    def __init__(self) -> None:
        self._days: dict[str, Slot] = {}

    # No awaits inside: the event loop makes each method atomic.
    async def take(self, day: str, decide: Callable[[Slot], Decision]) -> Decision:
        decision = decide(self._days.get(day, Slot()))
        if decision.granted:
            self._days[day] = decision.state
        return decision

    async def state(self, day: str) -> Slot:
        return self._days.get(day, Slot())

    async def exhaust(self, day: str, requests: int) -> None:
        slot = self._days.get(day, Slot())
        self._days[day] = Slot(max(slot.used, requests), slot.next_at)


class TokenBucket:
    """``rate`` requests per second with bursts of at most ``burst``."""

    def __init__(
        self, rate: float, burst: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def take(self) -> None:
        async with self._lock:  # FIFO among waiters
            self._refill()
            while self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1


@dataclass(slots=True)
class Ticket:
    """One admitted request attempt, counted in quota day ``day``. ``refund()``: it provably
    never reached Metrica (no connection was made), so the count is given back when the
    attempt ends."""

    day: str
    refunded: bool = False

    def refund(self) -> None:
        self.refunded = True


def _give_back(slot: Slot) -> Decision:
    return Decision(True, Slot(max(0, slot.used - 1), slot.next_at))


class QuotaGovernor:
    def __init__(
        self,
        *,
        max_parallel: int = 3,
        requests_per_second: float = 5.0,
        daily_budget: int = 5_000,
        reserve: float = 0.1,
        quota_day_s: int = 86_400,
        backend: BudgetBackend | None = None,
        burst: int = PACE_BURST,
        wait_for_quota: bool = True,
        clock: Callable[[], float] = time.time,
        poll_s: float = 30.0,
    ) -> None:
        if not 1 <= max_parallel <= 3:
            raise ValueError("max_parallel must be between 1 and 3 (Metrica's per-login limit)")
        self.max_parallel = max_parallel
        self.budget = Budget(daily_budget, reserve_requests(daily_budget, reserve), burst)
        self.days = QuotaDays(quota_day_s)
        self.backend: BudgetBackend = backend or InMemoryBudget()
        self.wait_for_quota = wait_for_quota
        self._clock = clock
        self._poll_s = poll_s
        self._slots = asyncio.Semaphore(max_parallel)
        self._bucket = TokenBucket(requests_per_second)
        self._seen_day = ""
        self._seen = Slot()
        self._samples: deque[tuple[float, int]] = deque()  # (time, used) for the projection
        # After a daily 429 in the first minutes of a quota day (clocks that disagree about the
        # reset), a short local pause instead of a whole day lost.
        self._blocked_until = 0.0
        self.waiting = 0  # requests waiting for the next quota day now
        self.demand: Callable[[], bool] = lambda: False  # records waiting to be sent
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self.attempts = 0
        DAILY_BUDGET.set(daily_budget)
        self._observe(self._clock())

    @property
    def daily_budget(self) -> int:
        return self.budget.requests

    def __repr__(self) -> str:
        return (
            f"QuotaGovernor(max_parallel={self.max_parallel}, daily_budget={self.daily_budget}, "
            f"remaining={self.remaining()})"
        )

    # -- what the rest of the process may ask, without I/O -------------------------------------

    def _current(self, now: float) -> Slot:
        return self._seen if self._seen_day == self.days.key(now) else Slot()

    def remaining(self) -> int:
        """Requests left in this quota day, as last seen by this process."""
        return max(0, self.budget.requests - self._current(self._clock()).used)

    def reset_at(self) -> datetime:
        return datetime.fromtimestamp(self.days.reset_at(self._clock()), UTC)

    def pace(self) -> float:
        """Requests per second the pace allows now."""
        now = self._clock()
        left = self.days.reset_at(now) - now
        return pace(self.budget.requests, self.budget.reserve, self._current(now).used, left)

    def send_delay(self) -> float:
        """Seconds until a paced request could leave, judging by the last state seen (0: now).
        The batcher holds a batch this long, and it grows meanwhile."""
        now = self._clock()
        if self._blocked_until > now:
            return self._blocked_until - now
        reset = self.days.reset_at(now)
        return paced_delay(self._current(now), self.budget, now=now, reset_at=reset)

    def waiting_for_quota(self) -> bool:
        """Sending waits for the next quota day: a request is blocked on it, or records wait
        while the paced budget is spent."""
        if self.waiting:
            return True
        now = self._clock()
        spent = self._current(now).used >= self.budget.requests - self.budget.reserve
        return (spent or self._blocked_until > now) and self.demand()

    # -- the shared state ----------------------------------------------------------------------

    def _observe(self, now: float, day: str | None = None, slot: Slot | None = None) -> None:
        if day is not None and slot is not None:
            if day != self._seen_day:
                self._samples.clear()
            self._seen_day, self._seen = day, slot
            self._samples.append((now, slot.used))
            window = min(600.0, self.days.length_s / 24)
            while len(self._samples) > 2 and self._samples[1][0] <= now - window:
                self._samples.popleft()
        used = self._current(now).used
        left_s = self.days.reset_at(now) - now
        QUOTA_REMAINING.set(max(0, self.budget.requests - used))
        QUOTA_RESET.set(left_s)
        QUOTA_PACE.set(pace(self.budget.requests, self.budget.reserve, used, left_s))
        QUOTA_PROJECTED.set(used + self._rate() * left_s)
        QUOTA_WAITING.set(int(self.waiting_for_quota()))

    def _rate(self) -> float:
        """Requests per second over the last minutes, every process together."""
        if len(self._samples) < 2:
            return 0.0
        (t0, u0), (t1, u1) = self._samples[0], self._samples[-1]
        return (u1 - u0) / (t1 - t0) if t1 > t0 else 0.0

    async def refresh(self) -> int:
        """Re-read the shared count (other processes spend it too); returns what is left."""
        now = self._clock()
        day = self.days.key(now)
        self._observe(now, day, await self.backend.state(day))
        return self.remaining()

    async def metrica_quota_spent(self) -> None:
        """Metrica answered 429 with a daily quota: stop everyone until the reset. In the first
        minutes of a quota day it more likely means Metrica's clock has not reset yet than that
        the new day is spent: pause briefly instead (one probe a minute at most)."""
        now = self._clock()
        length = self.days.length_s
        if now - self.days.started_at(now) < min(600.0, length / 100):
            self._blocked_until = now + min(60.0, length / 1000)
        else:
            day = self.days.key(now)
            await self.backend.exhaust(day, self.budget.requests)
            self._observe(now, day, await self.backend.state(day))
        self._observe(now)

    async def _admit(self, paced: bool) -> str:
        """Wait until a request may be counted, count it; the quota day it was counted in."""
        while True:
            now = self._clock()
            if self._blocked_until > now:
                await self._wait_for_quota(self._blocked_until - now)
                continue
            day, reset = self.days.key(now), self.days.reset_at(now)
            decision = await self.backend.take(
                day, partial(decide, budget=self.budget, now=now, reset_at=reset, paced=paced)
            )
            self._observe(now, day, decision.state)
            if decision.granted:
                return day
            if not decision.exhausted:
                await asyncio.sleep(min(decision.wait_s, self._poll_s))
            elif not self.wait_for_quota:
                raise BudgetExhausted(datetime.fromtimestamp(reset, UTC))
            else:
                await self._wait_for_quota(decision.wait_s)

    async def _wait_for_quota(self, wait_s: float) -> None:
        # In slices: another process's state, or a wall-clock jump, may end the wait early.
        self.waiting += 1
        QUOTA_WAITING.set(1)
        try:
            await asyncio.sleep(max(0.0, min(wait_s, self._poll_s)))
        finally:
            self.waiting -= 1
            self._observe(self._clock())

    # -- one request attempt -----------------------------------------------------------------

    @asynccontextmanager
    async def request(self, *, paced: bool = False) -> AsyncIterator[Ticket]:
        """Hold a place for one request attempt: waits for the budget (and the pace when
        ``paced``), a parallel slot and the per-second cap, then counts the attempt. An attempt
        whose :class:`Ticket` was refunded is uncounted as it ends."""
        ticket = Ticket(await self._admit(paced))
        try:
            async with self._slots:
                await self._bucket.take()
                self.attempts += 1
                self.in_flight += 1
                self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)
                try:
                    yield ticket
                finally:
                    self.in_flight -= 1
        finally:
            if ticket.refunded:
                await self._refund(ticket.day)

    async def _refund(self, day: str) -> None:
        decision = await self.backend.take(day, _give_back)
        if day == self._seen_day:
            self._observe(self._clock(), day, decision.state)


_SHARED: dict[str, QuotaGovernor] = {}


def shared_governor(
    token: str,
    *,
    max_parallel: int = 3,
    requests_per_second: float = 5.0,
    daily_budget: int = 5_000,
    reserve: float = 0.1,
    quota_day_s: int = 86_400,
) -> QuotaGovernor:
    """The process's one governor for this token (keyed by a hash: the token is never stored),
    for command-line tools: they fail at once when the budget is spent instead of waiting."""
    key = hashlib.sha256(token.encode("utf-8")).hexdigest()
    governor = _SHARED.get(key)
    if governor is None:
        governor = _SHARED[key] = QuotaGovernor(
            max_parallel=max_parallel,
            requests_per_second=requests_per_second,
            daily_budget=daily_budget,
            reserve=reserve,
            quota_day_s=quota_day_s,
            wait_for_quota=False,
        )
    return governor
