"""Metrica's request quotas (metrica-api.md §12), answered before any data is touched.

* parallel requests per token (default 3) → ``quota_parallel_requests``
* requests per second per client IP (default 30) → ``quota_requests_by_ip``
* requests per quota day per token (``quota_requests_by_uid``) and per counter
  (``quota_requests_by_counter_id``), default 5000 each.

Quota days are the intervals [k·N, (k+1)·N) of Unix time, N = ``day_s`` (default 86,400:
Metrica's reset at 00:00 GMT; shorter days are for simulation and tests, DESIGN.md §4).
Counts are kept per day index k, so changing N moves to another index (usually a fresh
one) and changing it back finds the old counts again.

Only admitted requests count: a refused request uses no quota, so a client backing off
recovers as soon as the window allows.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

DAY_S = 86_400
REQUESTS_PER_DAY = 5000


@dataclass(slots=True)
class QuotaLimits:
    parallel: int = 3
    per_second: int = 30
    daily: int = REQUESTS_PER_DAY  # per quota day, per token and per counter
    day_s: int = DAY_S

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"quota limit {f.name} must be an integer ≥ 1")


_DAILY_TYPES = {
    "quota_requests_by_uid": "this user",
    "quota_requests_by_counter_id": "this counter",
}


class Quotas:
    def __init__(
        self,
        limits: QuotaLimits | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        utc_now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.defaults = limits or QuotaLimits()
        self.limits = replace(self.defaults)
        self._monotonic = monotonic
        self._utc_now = utc_now
        self._in_flight: dict[str, int] = {}
        self._recent: dict[str, deque[float]] = {}
        # token / counter → day index → admitted requests
        self._by_token: dict[str, dict[int, int]] = {}
        self._by_counter: dict[int, dict[int, int]] = {}
        # day index → quota error type → refused requests
        self._refused: dict[int, dict[str, int]] = {}

    def reset(self) -> None:
        """Back to the configured defaults with no usage (``POST /_sandbox/reset``)."""
        self.limits = replace(self.defaults)
        self._in_flight.clear()
        self._recent.clear()
        self._by_token.clear()
        self._by_counter.clear()
        self._refused.clear()

    def day(self) -> int:
        """The current quota day's index k."""
        return int(self._utc_now().timestamp() // self.limits.day_s)

    def admit(self, token: str, counter_id: int, client_ip: str) -> str | None:
        """The quota error type refusing this request, or None. An admitted request holds a
        parallel slot until :meth:`release`."""
        refused = self._check(token, counter_id, client_ip)
        if refused is not None:
            self.note_refused(refused)
        return refused

    def _check(self, token: str, counter_id: int, client_ip: str) -> str | None:
        if self._in_flight.get(token, 0) >= self.limits.parallel:
            return "quota_parallel_requests"
        now = self._monotonic()
        recent = self._recent.setdefault(client_ip, deque())
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        if len(recent) >= self.limits.per_second:
            return "quota_requests_by_ip"
        day = self.day()
        by_token = self._by_token.setdefault(token, {})
        by_counter = self._by_counter.setdefault(counter_id, {})
        if by_token.get(day, 0) >= self.limits.daily:
            return "quota_requests_by_uid"
        if by_counter.get(day, 0) >= self.limits.daily:
            return "quota_requests_by_counter_id"
        recent.append(now)
        by_token[day] = by_token.get(day, 0) + 1
        by_counter[day] = by_counter.get(day, 0) + 1
        self._in_flight[token] = self._in_flight.get(token, 0) + 1
        return None

    def note_refused(self, error_type: str) -> None:
        """Counts a quota answer in the current day (injected bursts are counted here too)."""
        refused = self._refused.setdefault(self.day(), {})
        refused[error_type] = refused.get(error_type, 0) + 1

    def release(self, token: str) -> None:
        left = self._in_flight.get(token, 0) - 1
        if left > 0:
            self._in_flight[token] = left
        else:
            self._in_flight.pop(token, None)

    def reset_at(self) -> datetime:
        """When the current quota day ends."""
        return datetime.fromtimestamp((self.day() + 1) * self.limits.day_s, UTC)

    def message(self, error_type: str) -> str:
        """The 429 message; a daily quota names its reset, as Metrica's says 00:00 GMT."""
        whose = _DAILY_TYPES.get(error_type)
        if whose is None:
            return _SHORT_MESSAGES.get(error_type, "quota exceeded")
        reset = self.reset_at().strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"daily request quota of {whose} is exhausted (reset {reset})"

    def used_today(self) -> dict[str, int]:
        """Requests counted in the current quota day per counter (tokens are never shown)."""
        day = self.day()
        return {str(cid): days[day] for cid, days in self._by_counter.items() if day in days}

    def stats(self) -> dict[str, Any]:
        """``GET /_sandbox/stats``: usage of every quota day seen since start or reset."""
        return {
            "requests_today_by_counter": self.used_today(),
            "quota_day_s": self.limits.day_s,
            "quota_day": self.day(),
            "requests_per_day": self.limits.daily,
            "requests_by_quota_day": {
                str(cid): {str(day): n for day, n in days.items()}
                for cid, days in self._by_counter.items()
                if days
            },
            "refused_by_quota_day": {str(day): dict(types) for day, types in self._refused.items()},
        }


_SHORT_MESSAGES = {
    "quota_parallel_requests": "too many parallel requests for this user",
    "quota_requests_by_ip": "too many requests per second from this IP",
}
