"""Retry budget and backoff: exponential with full jitter, bounded by attempts and seconds."""

from __future__ import annotations

import random
from dataclasses import dataclass

from metrica_bridge.config import Settings
from metrica_bridge.metrica.errors import MetricaError, ThrottledError


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 12
    budget_s: float = 300.0
    base_s: float = 0.5
    cap_s: float = 30.0
    # Per-second and parallel quotas clear within a second or so: never come back sooner.
    throttle_floor_s: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: float) -> RetryPolicy:
        values: dict[str, float] = {
            "max_attempts": settings.retry_max_attempts,
            "budget_s": settings.retry_budget_s,
            **overrides,
        }
        return cls(**values)  # type: ignore[arg-type]

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
        ceiling = min(self.cap_s, self.base_s * 2 ** max(0, attempt - 1))
        return (rng or random).uniform(0.0, ceiling)

    def delay(self, failure: MetricaError, attempt: int, rng: random.Random | None = None) -> float:
        """How long to wait before the next attempt after ``failure``."""
        delay = self.backoff(attempt, rng)
        if isinstance(failure, ThrottledError):
            if failure.retry_after is not None:
                return failure.retry_after  # Metrica's word (or the daily reset) beats our guess
            return max(self.throttle_floor_s, delay)
        return delay
