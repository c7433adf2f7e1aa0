"""The sandbox as one object: accepted tokens, data, quotas and faults, without HTTP."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from metrica_bridge.sandbox.errors import ApiError
from metrica_bridge.sandbox.faults import Faults, FaultSettings
from metrica_bridge.sandbox.persist import SqliteState
from metrica_bridge.sandbox.quotas import QuotaLimits, Quotas
from metrica_bridge.sandbox.store import Store
from metrica_bridge.sandbox.validation import DEFAULT_MAX_ROWS

_INT32_MAX = 2**31 - 1


class Sandbox:
    def __init__(
        self,
        tokens: Iterable[str],
        counter_ids: Iterable[int],
        timezone: str = "Europe/Moscow",
        state_path: str | Path | None = None,
        limits: QuotaLimits | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
        requests_per_day: int | None = None,
        quota_day_s: int | None = None,
        products: Iterable[str] | None = None,
        goals: Iterable[str] = (),
    ) -> None:
        """``requests_per_day`` and ``quota_day_s`` override ``limits`` (None keeps them);
        ``products`` is a product list every counter starts with (None: none, so order products
        go unchecked), ``goals`` JavaScript-event goal ids every counter starts with; all of
        these are the defaults ``POST /_sandbox/reset`` returns to."""
        self._tokens = tuple(t for t in tokens if t)
        if not self._tokens:
            raise ValueError("the sandbox needs at least one token")
        limits = limits or QuotaLimits()
        if requests_per_day is not None:
            limits = replace(limits, daily=requests_per_day)
        if quota_day_s is not None:
            limits = replace(limits, day_s=quota_day_s)
        persist = SqliteState(state_path) if state_path is not None else None
        self.store = Store(counter_ids, timezone, persist, products=products, goals=goals)
        self.quotas = Quotas(limits)
        self.faults = Faults(FaultSettings(max_request_rows=max_rows))

    def authenticate(self, authorization: str | None) -> str:
        """The token of an ``Authorization: OAuth <token>`` header. Messages never quote it."""
        if not authorization:
            raise ApiError.of(
                "unauthorized", "the Authorization header is missing: send 'OAuth <token>'"
            )
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "oauth" or not token:
            raise ApiError.of(
                "unauthorized", "only 'Authorization: OAuth <token>' is accepted", "Authorization"
            )
        if not any(hmac.compare_digest(token, known) for known in self._tokens):
            raise ApiError.of("unauthorized", "the OAuth token is not valid", "Authorization")
        rejected = self.faults.rejects(token)
        if rejected is not None:
            raise ApiError.of(rejected, "the OAuth token was rejected", "Authorization")
        return token

    @staticmethod
    def counter_id(text: str) -> int:
        if not text.isascii() or not text.isdigit() or not 0 < int(text) <= _INT32_MAX:
            raise ApiError.of("not_found", "counter not found", "counterId")
        return int(text)

    def reset(self) -> None:
        """Clears data, faults, quota usage and quota overrides."""
        self.store.reset()
        self.quotas.reset()
        self.faults.reset()

    def close(self) -> None:
        self.store.close()
