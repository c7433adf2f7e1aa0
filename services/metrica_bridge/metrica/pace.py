"""The daily request budget as a pace (DESIGN.md §4; metrica-api.md §12).

Pure functions, no I/O: the quota governor runs :func:`decide` inside one store transaction, so
every process of one login and counter shares one count and one pace.

* Quota days are the intervals ``[k·N, (k+1)·N)`` of Unix time. With N = 86,400 they reset at
  00:00 GMT, as Metrica's daily quotas do (metrica-api.md §12); shorter days exist for
  simulation.
* The pace spends what is left of the budget, less the reserve, evenly over the time left until
  the reset: ``(budget − reserve − used) / seconds_left`` requests per second. It is recomputed
  at every request, so a quiet morning leaves a faster pace for the afternoon, and a reserve
  request (a retry) slows the rest of the day a little.
* Paced requests are spaced by the Generic Cell Rate Algorithm: ``next_at`` is when the next
  paced request is due; a request may go early by up to ``burst − 1`` intervals. After a quiet
  spell a contact and its order leave at once (the pace is a ceiling, not a delay); under load
  requests leave one interval apart and batches grow while they wait.
* Unpaced requests (retries, reconciliation, schema-sync, counter lookups) are counted but not
  spaced: they may use the whole budget, the reserve included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

GMT_DAY_S = 86_400
PACE_BURST = 3  # paced requests that may leave back to back after a quiet spell
_EPSILON = 1e-6  # seconds: rounding, so that waiting the time returned is always enough


@dataclass(frozen=True, slots=True)
class QuotaDays:
    """Quota days of ``length_s`` seconds, aligned on the Unix epoch."""

    length_s: int = GMT_DAY_S

    def __post_init__(self) -> None:
        if self.length_s < 1:
            raise ValueError("a quota day lasts at least one second")

    def index(self, now: float) -> int:
        return int(now // self.length_s)

    def reset_at(self, now: float) -> float:
        """Unix time of the next reset after ``now``."""
        return float((self.index(now) + 1) * self.length_s)

    def started_at(self, now: float) -> float:
        return float(self.index(now) * self.length_s)

    def key(self, now: float) -> str:
        """The store's key of the quota day holding ``now``. GMT days keep the ISO date the
        store used before quota days could be shorter, so an upgrade keeps the day's count."""
        index = self.index(now)
        if self.length_s == GMT_DAY_S:
            return (date(1970, 1, 1) + timedelta(days=index)).isoformat()
        return f"{index}@{self.length_s}s"


def reserve_requests(budget: int, reserve: float) -> int:
    """The reserve as a whole number of requests (rounded up: never less than asked)."""
    if not 0 <= reserve < 1:
        raise ValueError("the reserve is a fraction of the budget, from 0 to below 1")
    return min(budget - 1, math.ceil(budget * reserve)) if budget > 1 else 0


def pace(budget: int, reserve: int, used: int, seconds_left: float) -> float:
    """Requests per second that spend what is left, less the reserve, by the reset."""
    left = budget - reserve - used
    if left <= 0:
        return 0.0
    return left / max(seconds_left, 1e-3)


@dataclass(frozen=True, slots=True)
class Slot:
    """The shared state of one quota day: requests counted, and when the next paced one is due
    (Unix time; 0 before the first)."""

    used: int = 0
    next_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    granted: bool
    state: Slot  # the state to store (unchanged when not granted)
    wait_s: float = 0.0  # not granted: how long until asking again makes sense
    exhausted: bool = False  # not granted because the day's (paced) budget is spent


@dataclass(frozen=True, slots=True)
class Budget:
    """What :func:`decide` needs besides the state: the budget, its reserve in requests, and
    the burst of paced requests."""

    requests: int
    reserve: int = 0
    burst: int = PACE_BURST

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise ValueError("the daily budget is at least one request")
        if not 0 <= self.reserve < self.requests:
            raise ValueError("the reserve must leave at least one request to the pace")
        if self.burst < 1:
            raise ValueError("burst must be at least 1")


def decide(state: Slot, budget: Budget, *, now: float, reset_at: float, paced: bool) -> Decision:
    """May one more request go now? Counts it in the returned state when it may."""
    until_reset = max(0.0, reset_at - now)
    if state.used >= budget.requests:
        return Decision(False, state, until_reset, exhausted=True)
    if not paced:
        return Decision(True, Slot(state.used + 1, state.next_at))
    left = budget.requests - budget.reserve - state.used
    if left <= 0:
        return Decision(False, state, until_reset, exhausted=True)
    due = max(state.next_at, now)
    # Early by up to (burst − 1) intervals; the interval, (reset − t) / left, shrinks as t
    # nears the reset, so the wait solves due − k·(reset − t) ≤ t for t, k = (burst − 1)/left.
    k = (budget.burst - 1) / left
    if due - k * until_reset - now > _EPSILON:
        wait = (due - k * reset_at) / (1 - k) - now if k < 1 else until_reset
        return Decision(False, state, max(wait, _EPSILON))
    return Decision(True, Slot(state.used + 1, due + until_reset / left))


def paced_delay(state: Slot, budget: Budget, *, now: float, reset_at: float) -> float:
    """Seconds until a paced request would be granted, judging by ``state`` (0: now)."""
    decision = decide(state, budget, now=now, reset_at=reset_at, paced=True)
    return 0.0 if decision.granted else decision.wait_s
