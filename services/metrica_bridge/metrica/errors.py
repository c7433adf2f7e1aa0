"""Typed outcomes of a Metrica request, one per failure class (DESIGN.md §5).

Every message here is built from our own words plus Metrica's ``error_type`` and ``message``
fields, passed through :func:`metrica_bridge.logs.redact`: never a header, never the token,
never a record's personal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from metrica_bridge.metrics import ResultClass


@dataclass(frozen=True)
class ApiError:
    """One entry of Metrica's ``errors`` array."""

    error_type: str
    message: str
    location: str | None = None


class MetricaError(Exception):
    """Base of every failure the client raises. ``str(exc)`` is safe to log and to DLQ."""

    result_class: ResultClass = ResultClass.TRANSIENT

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        status: int | None = None,
        error_type: str | None = None,
        errors: tuple[ApiError, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.status = status
        self.error_type = error_type
        self.errors = errors

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, endpoint={self.endpoint!r}, status={self.status!r})"


class TransientError(MetricaError):
    """Timeouts, connection errors, 5xx: worth retrying.

    ``unclear`` is true when the request may have reached Metrica and been applied (a timeout
    after the body was sent, a 5xx): only idempotent writes may be re-sent then.
    ``never_sent`` is true when no connection was made (connect error or timeout, no pooled
    connection free): the request provably never reached Metrica, nor its quota.
    """

    result_class = ResultClass.TRANSIENT

    def __init__(self, message: str, *, unclear: bool, never_sent: bool = False, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.unclear = unclear
        self.never_sent = never_sent


class ThrottledError(MetricaError):
    """A 429 ``quota_*``: refused before touching data, so always safe to re-send.

    ``daily`` is true for the per-login and per-counter daily quotas, which last until the next
    00:00 GMT; the others (per second, per IP, parallel) pass in seconds.
    """

    result_class = ResultClass.THROTTLED

    def __init__(
        self,
        message: str,
        *,
        quota: str | None,
        daily: bool,
        retry_after: float | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.quota = quota
        self.daily = daily
        self.retry_after = retry_after


class BudgetExhausted(ThrottledError):
    """Our own daily request budget is spent; no request was sent. ``reset_at`` is UTC."""

    def __init__(self, reset_at: datetime, *, endpoint: str = "governor") -> None:
        super().__init__(
            f"daily request budget spent until {reset_at.isoformat()}",
            quota="daily_budget",
            daily=True,
            endpoint=endpoint,
        )
        self.reset_at = reset_at


class SetupError(MetricaError):
    """401/403/404: the token or the counter is wrong. Never retried; stop sending and alert."""

    result_class = ResultClass.SETUP


class PermanentError(MetricaError):
    """Metrica refused the data (400, or a 200 that did not pass validation).

    ``rows`` holds the indexes (into the records sent) named by the errors' ``location``, when
    Metrica named any; empty means "somewhere in this batch": split it to isolate the bad rows.
    """

    result_class = ResultClass.PERMANENT

    def __init__(self, message: str, *, rows: tuple[int, ...] = (), **kw: Any) -> None:
        super().__init__(message, **kw)
        self.rows = rows


class UnclearOutcome(MetricaError):
    """A non-idempotent write (``APPEND``) got an unclear answer and cannot be re-sent blindly."""

    result_class = ResultClass.TRANSIENT


class RetryExhausted(MetricaError):
    """Attempts or seconds of the retry budget ran out. ``last`` is the last failure seen."""

    def __init__(self, last: MetricaError, *, attempts: int, elapsed_s: float) -> None:
        super().__init__(
            f"gave up after {attempts} attempt(s) in {elapsed_s:.1f}s: "
            f"{type(last).__name__}: {last.message}",
            endpoint=last.endpoint,
            status=last.status,
            error_type=last.error_type,
            errors=last.errors,
        )
        self.last = last
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        self.result_class = last.result_class

    @property
    def last_class(self) -> ResultClass:
        return self.last.result_class
