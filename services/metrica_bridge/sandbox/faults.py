"""Injected faults (``POST /_sandbox/faults``): errors, latency, outages, rejected tokens,
bursts of quota answers, uploads that are applied but answered with an error, and the
hypotheses the real API leaves open (request-size limits, error locations).

Injected 5xx answers come before any data is touched, except ``apply_then_fail_rate``, which
applies the upload and then answers ``error_status``: the unclear outcome a client must
resolve without double-applying (metrica-api.md §16).

Quota limits live in :class:`~.quotas.Quotas`, which enforces them; ``requests_per_day``
(alias ``daily_quota``) and ``quota_day_s`` are set through here. Counts are kept per quota
day index, so a new ``quota_day_s`` usually starts on a day with no usage.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from metrica_bridge.sandbox.errors import QUOTA_ERROR_TYPES, ApiError, ErrorItem
from metrica_bridge.sandbox.quotas import Quotas
from metrica_bridge.sandbox.validation import DEFAULT_MAX_ROWS

REJECT_ERROR_TYPES = frozenset({"invalid_token", "access_denied"})


@dataclass(slots=True)
class FaultSettings:
    error_rate: float = 0.0
    error_status: int = 503
    latency_ms: float = 0.0
    outage_until: float | None = None
    reject_token: str | None = None
    reject_error_type: str = "invalid_token"
    quota_burst_count: int = 0
    quota_burst_type: str = "quota_requests_by_ip"
    apply_then_fail_rate: float = 0.0
    seed: int | None = None
    # Unconfirmed limits (metrica-api.md §6, §17): rows per upload → 400 too_much_rows;
    # body bytes → 413 from a fronting proxy (None: no limit).
    max_request_rows: int = DEFAULT_MAX_ROWS
    max_request_bytes: int | None = None
    # False: upload errors carry no ``location`` (in case the real API names no rows).
    error_locations: bool = True
    # True: an upload with bad rows is answered 200 with ``api_validation_status: FAILED``
    # (nothing applied, listed in last_uploadings) instead of 400 (metrica-api.md §9, §17).
    invalid_as_200: bool = False


class Faults:
    def __init__(
        self,
        defaults: FaultSettings | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._monotonic = monotonic
        self.defaults = defaults or FaultSettings()
        self.settings = replace(self.defaults)
        self._rng = random.Random(self.settings.seed)

    def reset(self) -> None:
        self.settings = replace(self.defaults)
        self._rng = random.Random(self.settings.seed)

    # -- decisions, in the order a request meets them ----------------------------------------

    def rejects(self, token: str) -> str | None:
        s = self.settings
        return (
            s.reject_error_type if s.reject_token is not None and token == s.reject_token else None
        )

    def take_quota_burst(self) -> str | None:
        s = self.settings
        if s.quota_burst_count <= 0:
            return None
        s.quota_burst_count -= 1
        return s.quota_burst_type

    @property
    def latency_s(self) -> float:
        return self.settings.latency_ms / 1000.0

    def error_before(self) -> int | None:
        """An HTTP status to answer instead of handling the request, or None."""
        s = self.settings
        if s.outage_until is not None:
            if self._monotonic() < s.outage_until:
                return s.error_status
            s.outage_until = None
        if s.error_rate > 0 and self._rng.random() < s.error_rate:
            return s.error_status
        return None

    def error_after(self) -> int | None:
        s = self.settings
        if s.apply_then_fail_rate > 0 and self._rng.random() < s.apply_then_fail_rate:
            return s.error_status
        return None

    def start_outage(self, seconds: float) -> None:
        self.settings.outage_until = self._monotonic() + seconds if seconds > 0 else None

    def reseed(self, seed: int | None) -> None:
        self.settings.seed = seed
        self._rng = random.Random(seed)

    def outage_left_s(self) -> float:
        until = self.settings.outage_until
        return max(0.0, until - self._monotonic()) if until is not None else 0.0


def _rate(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
        raise ValueError("must be a number from 0 to 1")
    return float(v)


def _non_negative(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise ValueError("must be a number ≥ 0")
    return float(v)


def _positive_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError("must be an integer ≥ 1")
    return v


def _status(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 500 <= v <= 599:
        raise ValueError("must be an HTTP status from 500 to 599")
    return v


def _positive_int_or_null(v: Any) -> int | None:
    return None if v is None else _positive_int(v)


def _boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _token(v: Any) -> str | None:
    if v is not None and (not isinstance(v, str) or not v):
        raise ValueError("must be a non-empty string or null")
    return v


def _reject_type(v: Any) -> str:
    if v not in REJECT_ERROR_TYPES:
        raise ValueError("must be invalid_token or access_denied")
    return str(v)


def _seed(v: Any) -> int | None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
        raise ValueError("must be an integer or null")
    return v


def _burst(v: Any) -> tuple[int, str]:
    if not isinstance(v, dict) or set(v) - {"count", "error_type"}:
        raise ValueError("must be {count, error_type}")
    count = v.get("count", 0)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError("count must be an integer ≥ 0")
    error_type = v.get("error_type", "quota_requests_by_ip")
    if error_type not in QUOTA_ERROR_TYPES:
        raise ValueError("error_type must be one of " + ", ".join(sorted(QUOTA_ERROR_TYPES)))
    return count, str(error_type)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "error_rate": _rate,
    "error_status": _status,
    "latency_ms": _non_negative,
    "outage_seconds": _non_negative,
    "requests_per_day": _positive_int,
    "daily_quota": _positive_int,  # the older name of requests_per_day
    "quota_day_s": _positive_int,
    "parallel_limit": _positive_int,
    "per_second_limit": _positive_int,
    "reject_token": _token,
    "reject_error_type": _reject_type,
    "quota_burst": _burst,
    "apply_then_fail_rate": _rate,
    "seed": _seed,
    "max_request_rows": _positive_int,
    "max_request_bytes": _positive_int_or_null,
    "error_locations": _boolean,
    "invalid_as_200": _boolean,
}


def configure(faults: Faults, quotas: Quotas, body: Any) -> None:
    """Merge ``body`` into the current faults and quota limits; all-or-nothing."""
    if not isinstance(body, Mapping):
        raise ApiError.of("invalid_parameter", "the body must be a JSON object")
    parsed: dict[str, Any] = {}
    errors: list[ErrorItem] = []
    for key, value in body.items():
        parser = _PARSERS.get(key)
        if parser is None:
            errors.append(ErrorItem("invalid_parameter", f"unknown fault {key!r}", key))
            continue
        try:
            parsed[key] = parser(value)
        except ValueError as exc:
            errors.append(ErrorItem("invalid_parameter", f"{key} {exc}", key))
    per_day = {parsed[k] for k in ("requests_per_day", "daily_quota") if k in parsed}
    if len(per_day) > 1:
        errors.append(
            ErrorItem(
                "invalid_parameter", "daily_quota and requests_per_day disagree", "daily_quota"
            )
        )
    if errors:
        raise ApiError(400, errors)
    s = faults.settings
    for key, value in parsed.items():
        if key == "outage_seconds":
            faults.start_outage(value)
        elif key in ("requests_per_day", "daily_quota"):
            quotas.limits.daily = value
        elif key == "quota_day_s":
            quotas.limits.day_s = value
        elif key == "parallel_limit":
            quotas.limits.parallel = value
        elif key == "per_second_limit":
            quotas.limits.per_second = value
        elif key == "quota_burst":
            s.quota_burst_count, s.quota_burst_type = value
        elif key == "seed":
            faults.reseed(value)
        else:
            setattr(s, key, value)


def describe(faults: Faults, quotas: Quotas) -> dict[str, Any]:
    """The full current fault state. A rejected token is shown masked, never echoed."""
    s = faults.settings
    return {
        "error_rate": s.error_rate,
        "error_status": s.error_status,
        "latency_ms": s.latency_ms,
        "outage_seconds": round(faults.outage_left_s(), 3),
        "requests_per_day": quotas.limits.daily,
        "daily_quota": quotas.limits.daily,
        "quota_day_s": quotas.limits.day_s,
        "parallel_limit": quotas.limits.parallel,
        "per_second_limit": quotas.limits.per_second,
        "reject_token": "***" if s.reject_token is not None else None,
        "reject_error_type": s.reject_error_type,
        "quota_burst": {"count": s.quota_burst_count, "error_type": s.quota_burst_type},
        "apply_then_fail_rate": s.apply_then_fail_rate,
        "seed": s.seed,
        "max_request_rows": s.max_request_rows,
        "max_request_bytes": s.max_request_bytes,
        "error_locations": s.error_locations,
        "invalid_as_200": s.invalid_as_200,
    }
