"""One function that turns an HTTP exchange into one typed outcome (DESIGN.md §5).

Decisions the API documentation leaves open (see docs/decisions.md):

* An upload succeeds only with HTTP 200, an ``uploading_id``, ``api_validation_status ==
  "PASSED"`` and ``elements_count`` equal to the rows sent.
* A 200 with ``FAILED`` is permanent: Metrica validated the data and refused it, so sending the
  same bytes again fails again. Its ``api_validation_errors`` (strings) become the error's
  ``errors`` (no row indexes: the batch is bisected), so two refusals can be told apart. A 200
  ``PASSED`` whose count differs from the rows sent is also permanent
  (``elements_count_mismatch``), without row indexes: the batch is split and re-sent
  (idempotent under SAVE/UPDATE) until the odd record is alone.
* A 2xx whose body cannot be read is transient and unclear: the upload may have been applied.
* 401, 403 and 404 are setup errors; 420 is treated like 429 (seen in third-party code);
  408 is transient and clear (the server never read the request); 413 is permanent with the
  error type ``request_too_large``, like a 400 ``too_much_rows`` (the request is split, §11);
  other 4xx are permanent.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from metrica_bridge.logs import redact
from metrica_bridge.metrica.errors import (
    ApiError,
    PermanentError,
    SetupError,
    ThrottledError,
    TransientError,
)

# The per-login and per-counter daily quotas last until 00:00 GMT (metrica-api.md §12).
DAILY_QUOTAS = frozenset({"quota_requests_by_uid", "quota_requests_by_counter_id"})
# A request refused for its size (400 too_much_rows, §11; or HTTP 413): split it, never DLQ it.
TOO_LARGE = "request_too_large"
TOO_LARGE_TYPES = frozenset({"too_much_rows", TOO_LARGE})
_ROW = re.compile(r"^\s*[A-Za-z_]+\[(\d+)\]")
_MAX_MESSAGE = 300


@dataclass(frozen=True)
class UploadResult:
    """Metrica's ``uploading`` object of an accepted upload."""

    uploading_id: str
    elements_count: int
    api_validation_status: str
    datetime: str | None = None
    entity_type: str | None = None
    uploading_format: str | None = None
    uploading_source: str | None = None


@dataclass(frozen=True)
class Success:
    status: int
    body: Any
    upload: UploadResult | None = None


Outcome = Success | TransientError | ThrottledError | SetupError | PermanentError


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def rows_from_errors(errors: tuple[ApiError, ...]) -> tuple[int, ...]:
    """Row indexes named by ``location`` (``orders[3].create_date_time`` → 3), sorted, unique."""
    rows = {int(m.group(1)) for e in errors if e.location and (m := _ROW.match(e.location))}
    return tuple(sorted(rows))


def _clean(text: Any) -> str:
    return redact(str(text))[:_MAX_MESSAGE]


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _api_errors(body: Any) -> tuple[ApiError, ...]:
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return ()
    found = []
    for item in body["errors"]:
        if isinstance(item, dict):
            location = item.get("location")
            found.append(
                ApiError(
                    error_type=str(item.get("error_type") or "unknown"),
                    message=_clean(item.get("message") or ""),
                    location=None if location is None else str(location),
                )
            )
    return tuple(found)


def _validation_errors(uploading: dict[str, Any]) -> tuple[ApiError, ...]:
    """``api_validation_errors`` of a failed upload: strings (getLastUploadings schema)."""
    raw = uploading.get("api_validation_errors")
    if not isinstance(raw, list):
        return ()
    return tuple(ApiError("validation_failed", _clean(item)) for item in raw if item is not None)


def _describe(status: int, errors: tuple[ApiError, ...], body: Any) -> str:
    if errors:
        parts = [f"{e.error_type}: {e.message}" if e.message else e.error_type for e in errors[:5]]
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        return f"HTTP {status}: " + "; ".join(parts) + more
    if isinstance(body, dict) and body.get("message"):
        return f"HTTP {status}: {_clean(body['message'])}"
    return f"HTTP {status}"


def classify_exception(endpoint: str, exc: httpx.HTTPError) -> TransientError:
    """Transport failures. Only a failure to connect proves the request never left."""
    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return TransientError(
            f"{name}: request not sent", unclear=False, never_sent=True, endpoint=endpoint
        )
    return TransientError(f"{name}: request may have been applied", unclear=True, endpoint=endpoint)


def _upload_outcome(
    endpoint: str, response: httpx.Response, body: Any, rows_sent: int
) -> Success | PermanentError | TransientError:
    uploading = body.get("uploading") if isinstance(body, dict) else None
    if not isinstance(uploading, dict) or not uploading.get("uploading_id"):
        return TransientError(
            f"HTTP {response.status_code} without an uploading_id: outcome unclear",
            unclear=True,
            endpoint=endpoint,
            status=response.status_code,
        )
    status = str(uploading.get("api_validation_status") or "")
    try:
        count = int(uploading.get("elements_count"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        count = -1
    upload = UploadResult(
        uploading_id=str(uploading["uploading_id"]),
        elements_count=count,
        api_validation_status=status,
        datetime=uploading.get("datetime"),
        entity_type=uploading.get("entity_type"),
        uploading_format=uploading.get("uploading_format"),
        uploading_source=uploading.get("uploading_source"),
    )
    if status != "PASSED":
        errors = _api_errors(body) or _validation_errors(uploading)
        detail = "; ".join(e.message for e in errors[:3] if e.message)
        return PermanentError(
            f"upload {upload.uploading_id} not accepted: api_validation_status={status or 'missing'}"
            + (f": {detail}" if detail else ""),
            rows=rows_from_errors(errors),
            endpoint=endpoint,
            status=response.status_code,
            error_type="validation_failed",
            errors=errors,
        )
    if count != rows_sent:
        return PermanentError(
            f"upload {upload.uploading_id} counted {count} element(s) of {rows_sent} sent",
            endpoint=endpoint,
            status=response.status_code,
            error_type="elements_count_mismatch",
        )
    return Success(status=response.status_code, body=body, upload=upload)


def classify(
    endpoint: str,
    response: httpx.Response,
    *,
    rows_sent: int | None = None,
    now: datetime | None = None,
) -> Outcome:
    """Classify a received response. ``rows_sent`` is set for uploads (contacts, orders)."""
    code = response.status_code
    body = _json(response)
    if 200 <= code < 300:
        if rows_sent is not None:
            return _upload_outcome(endpoint, response, body, rows_sent)
        if body is None and response.content:
            return TransientError(
                f"HTTP {code} with an unreadable body", unclear=True, endpoint=endpoint, status=code
            )
        if isinstance(body, dict) and body.get("success") is False:
            return PermanentError(f"HTTP {code} with success=false", endpoint=endpoint, status=code)
        return Success(status=code, body=body)

    errors = _api_errors(body)
    first_type = errors[0].error_type if errors else None
    message = _describe(code, errors, body)
    common: dict[str, Any] = {
        "endpoint": endpoint,
        "status": code,
        "error_type": first_type,
        "errors": errors,
    }
    if code in (429, 420):
        quota = next((e.error_type for e in errors if e.error_type.startswith("quota_")), None)
        daily = quota in DAILY_QUOTAS
        # A daily quota lasts until the reset of the quota day, which the governor knows.
        retry_after = retry_after_seconds(response.headers.get("Retry-After"), now)
        return ThrottledError(message, quota=quota, daily=daily, retry_after=retry_after, **common)
    if code in (401, 403, 404):
        return SetupError(message, **common)
    if code == 413:
        # Answered by whatever fronts the API, before it is read: the request is too large.
        return PermanentError(message, **{**common, "error_type": TOO_LARGE})
    if code == 408:
        return TransientError(message, unclear=False, **common)
    if code >= 500:
        return TransientError(message, unclear=True, **common)
    return PermanentError(message, rows=rows_from_errors(errors), **common)
