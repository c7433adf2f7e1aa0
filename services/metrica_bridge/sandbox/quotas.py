"""Metrica's request quotas (metrica-api.md §12), answered before any data is touched.

* parallel requests per token (default 3) → ``quota_parallel_requests``
* requests per second per client IP (default 30) → ``quota_requests_by_ip``
* requests per day per token (``quota_requests_by_uid``) and per counter
  (``quota_requests_by_counter_id``), default 5000 each, reset at 00:00 GMT.

Only admitted requests count: a refused request uses no quota, so a client backing off
recovers as soon as the window allows.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime


@dataclass(slots=True)
class QuotaLimits:
    parallel: int = 3
    per_second: int = 30
    daily: int = 5000


class Quotas:
    def __init__(
        self,
        limits: QuotaLimits | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        utc_now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.defaults = limits or QuotaLimits()
        self.limits = QuotaLimits(**{k: getattr(self.defaults, k) for k in QuotaLimits.__slots__})
        self._monotonic = monotonic
        self._utc_now = utc_now
        self._in_flight: dict[str, int] = {}
        self._recent: dict[str, deque[float]] = {}
        self._day: date = utc_now().date()
        self._by_token: dict[str, int] = {}
        self._by_counter: dict[int, int] = {}

    def reset(self) -> None:
        """Back to the configured defaults with no usage (``POST /_sandbox/reset``)."""
        self.limits = QuotaLimits(**{k: getattr(self.defaults, k) for k in QuotaLimits.__slots__})
        self._in_flight.clear()
        self._recent.clear()
        self._by_token.clear()
        self._by_counter.clear()

    def admit(self, token: str, counter_id: int, client_ip: str) -> str | None:
        """The quota error type refusing this request, or None. An admitted request holds a
        parallel slot until :meth:`release`."""
        if self._in_flight.get(token, 0) >= self.limits.parallel:
            return "quota_parallel_requests"
        now = self._monotonic()
        recent = self._recent.setdefault(client_ip, deque())
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        if len(recent) >= self.limits.per_second:
            return "quota_requests_by_ip"
        today = self._utc_now().date()
        if today != self._day:
            self._day = today
            self._by_token.clear()
            self._by_counter.clear()
        if self._by_token.get(token, 0) >= self.limits.daily:
            return "quota_requests_by_uid"
        if self._by_counter.get(counter_id, 0) >= self.limits.daily:
            return "quota_requests_by_counter_id"
        recent.append(now)
        self._by_token[token] = self._by_token.get(token, 0) + 1
        self._by_counter[counter_id] = self._by_counter.get(counter_id, 0) + 1
        self._in_flight[token] = self._in_flight.get(token, 0) + 1
        return None

    def release(self, token: str) -> None:
        left = self._in_flight.get(token, 0) - 1
        if left > 0:
            self._in_flight[token] = left
        else:
            self._in_flight.pop(token, None)

    def used_today(self) -> dict[str, int]:
        """Requests counted today per counter (inspection; tokens are never shown)."""
        return {str(cid): n for cid, n in self._by_counter.items()}
