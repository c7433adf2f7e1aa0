"""The quota governor: one per token, shared by everything in the process (DESIGN.md §4).

Three limits, applied to every request attempt (retries included) in this order:

1. the daily request budget (resets 00:00 GMT) — taken first, so a request waiting for
   tomorrow never holds a parallel slot;
2. at most ``max_parallel`` (≤ 3) requests in flight — an asyncio semaphore;
3. a requests-per-second cap — a token bucket, entered while holding the slot so that
   requests freed together do not burst.

The daily count lives behind :class:`BudgetBackend` so several processes can share one budget
(a table in the PostgreSQL store later); :class:`InMemoryBudget` serves one process.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Protocol

from metrica_bridge.metrica.classify import next_utc_midnight
from metrica_bridge.metrica.errors import BudgetExhausted
from metrica_bridge.metrics import QUOTA_REMAINING


class BudgetBackend(Protocol):
    """Counts request attempts per UTC day. Implementations must be safe for concurrent use."""

    async def take(self, day: date, limit: int) -> int | None:
        """Count one attempt on ``day``; return what is left after it, or None when spent."""
        ...

    async def give_back(self, day: date) -> None:
        """Undo one :meth:`take` whose request was never sent."""
        ...

    async def exhaust(self, day: date, limit: int) -> None:
        """Metrica said the daily quota is spent: treat ``day`` as used up."""
        ...

    async def used(self, day: date) -> int: ...


class InMemoryBudget:
    """One process's count; a new UTC day starts from zero."""

    def __init__(self) -> None:
        self._day: date | None = None
        self._used = 0

    def _roll(self, day: date) -> None:
        if self._day != day:
            self._day, self._used = day, 0

    # No awaits inside: the event loop makes each method atomic.
    async def take(self, day: date, limit: int) -> int | None:
        self._roll(day)
        if self._used >= limit:
            return None
        self._used += 1
        return limit - self._used

    async def give_back(self, day: date) -> None:
        if self._day == day and self._used > 0:
            self._used -= 1

    async def exhaust(self, day: date, limit: int) -> None:
        self._roll(day)
        self._used = max(self._used, limit)

    async def used(self, day: date) -> int:
        self._roll(day)
        return self._used


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


class QuotaGovernor:
    def __init__(
        self,
        *,
        max_parallel: int = 3,
        requests_per_second: float = 5.0,
        daily_budget: int = 5_000,
        backend: BudgetBackend | None = None,
        burst: float = 1.0,
        max_linger_factor: float = 30.0,
        utcnow: Callable[[], datetime] = lambda: datetime.now(UTC),
        reset_poll_s: float = 30.0,
    ) -> None:
        if not 1 <= max_parallel <= 3:
            raise ValueError("max_parallel must be between 1 and 3 (Metrica's per-login limit)")
        if daily_budget < 1:
            raise ValueError("daily_budget must be at least 1")
        self.max_parallel = max_parallel
        self.daily_budget = daily_budget
        self.backend: BudgetBackend = backend or InMemoryBudget()
        self.max_linger_factor = max_linger_factor
        self._utcnow = utcnow
        self._reset_poll_s = reset_poll_s
        self._slots = asyncio.Semaphore(max_parallel)
        self._bucket = TokenBucket(requests_per_second, burst)
        self._remaining_day: date | None = None
        self._remaining = daily_budget
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self.attempts = 0
        QUOTA_REMAINING.set(daily_budget)

    def __repr__(self) -> str:
        return (
            f"QuotaGovernor(max_parallel={self.max_parallel}, daily_budget={self.daily_budget}, "
            f"remaining={self.remaining()})"
        )

    # -- the daily budget, as the batcher sees it --------------------------------------------

    def _today(self) -> date:
        return self._utcnow().astimezone(UTC).date()

    def _note_remaining(self, day: date, remaining: int) -> None:
        self._remaining_day, self._remaining = day, max(0, remaining)
        QUOTA_REMAINING.set(self._remaining)

    def remaining(self) -> int:
        """Requests left today, as last seen by this process (no I/O)."""
        if self._remaining_day != self._today():
            return self.daily_budget
        return self._remaining

    def reset_at(self) -> datetime:
        return next_utc_midnight(self._utcnow())

    def budget_pressure(self) -> float:
        """0.0 with the whole budget left, 1.0 when it is spent."""
        return 1.0 - self.remaining() / self.daily_budget

    def linger_factor(self) -> float:
        """How much the batcher should stretch its linger: 1.0 while at least half the budget is
        left, then ``0.5 / fraction_left`` (2x at 25 % left, 5x at 10 %), capped."""
        left = self.remaining() / self.daily_budget
        if left >= 0.5:
            return 1.0
        if left <= 0:
            return self.max_linger_factor
        return min(self.max_linger_factor, 0.5 / left)

    async def refresh(self) -> int:
        """Re-read the shared count (other processes spend it too)."""
        day = self._today()
        self._note_remaining(day, self.daily_budget - await self.backend.used(day))
        return self._remaining

    async def exhaust_today(self) -> None:
        """Metrica answered 429 with a daily quota: stop everyone until the reset."""
        day = self._today()
        await self.backend.exhaust(day, self.daily_budget)
        self._note_remaining(day, 0)

    async def _take_budget(self, deadline: datetime | None) -> date:
        while True:
            day = self._today()
            left = await self.backend.take(day, self.daily_budget)
            if left is not None:
                self._note_remaining(day, left)
                return day
            self._note_remaining(day, 0)
            reset = next_utc_midnight(self._utcnow())
            if deadline is None or reset > deadline:
                raise BudgetExhausted(reset)
            wait = (reset - self._utcnow()).total_seconds()
            # Sleep in slices: a wall-clock jump or another process's refund may end it early.
            await asyncio.sleep(max(0.0, min(wait, self._reset_poll_s)))

    # -- one request attempt -----------------------------------------------------------------

    @asynccontextmanager
    async def request(self, *, wait_until: datetime | None = None) -> AsyncIterator[None]:
        """Hold a place for one request attempt.

        When the daily budget is spent this waits for the reset if it comes before
        ``wait_until`` (UTC), and raises :class:`BudgetExhausted` otherwise (``None``: fail fast).
        """
        day = await self._take_budget(wait_until)
        sent = False
        try:
            async with self._slots:
                await self._bucket.take()
                sent = True
                self.attempts += 1
                self.in_flight += 1
                self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)
                try:
                    yield
                finally:
                    self.in_flight -= 1
        finally:
            if not sent:  # cancelled while queued: the attempt never reached Metrica
                await self.backend.give_back(day)
                self._note_remaining(day, self._remaining + 1)


_SHARED: dict[str, QuotaGovernor] = {}


def shared_governor(
    token: str,
    *,
    max_parallel: int = 3,
    requests_per_second: float = 5.0,
    daily_budget: int = 5_000,
    backend: BudgetBackend | None = None,
) -> QuotaGovernor:
    """The process's one governor for this token (keyed by a hash: the token is never stored)."""
    key = hashlib.sha256(token.encode("utf-8")).hexdigest()
    governor = _SHARED.get(key)
    if governor is None:
        governor = _SHARED[key] = QuotaGovernor(
            max_parallel=max_parallel,
            requests_per_second=requests_per_second,
            daily_budget=daily_budget,
            backend=backend,
        )
    return governor
