from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from metrica_bridge.metrica.classify import (
    TOO_LARGE_TYPES,
    Success,
    classify,
    classify_exception,
    retry_after_seconds,
)
from metrica_bridge.metrica.errors import PermanentError, SetupError, ThrottledError, TransientError
from metrica_bridge.metrica.retry import RetryPolicy

NOW = datetime(2025, 3, 2, 21, 0, tzinfo=UTC)


def _response(
    status: int, body: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def _error(status: int, error_type: str, location: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"error_type": error_type, "message": "nope"}
    if location is not None:
        item["location"] = location
    return {"errors": [item], "code": status, "message": "nope"}


def _uploading(status: str = "PASSED", count: int = 2) -> dict[str, Any]:
    return {
        "uploading": {
            "uploading_id": "17",
            "api_validation_status": status,
            "elements_count": count,
        }
    }


def test_upload_success_needs_passed_and_matching_count() -> None:
    outcome = classify("orders", _response(200, _uploading()), rows_sent=2)
    assert isinstance(outcome, Success)
    assert outcome.upload is not None
    assert outcome.upload.uploading_id == "17"

    failed = classify("orders", _response(200, _uploading("FAILED")), rows_sent=2)
    assert isinstance(failed, PermanentError)
    assert failed.error_type == "validation_failed"

    short = classify("orders", _response(200, _uploading(count=1)), rows_sent=2)
    assert isinstance(short, PermanentError)
    assert short.error_type == "elements_count_mismatch"
    assert short.rows == ()

    no_id = classify("orders", _response(200, {"uploading": {}}), rows_sent=2)
    assert isinstance(no_id, TransientError)
    assert no_id.unclear


def test_permanent_error_names_rows() -> None:
    body = {
        "errors": [
            {
                "error_type": "invalid_parameter",
                "message": "bad date",
                "location": "orders[3].create_date_time",
            },
            {"error_type": "invalid_parameter", "message": "bad id", "location": "orders[0].id"},
            {
                "error_type": "invalid_parameter",
                "message": "again",
                "location": "orders[3].order_status",
            },
            {"error_type": "invalid_json", "message": "whole body"},
        ],
        "code": 400,
    }
    outcome = classify("orders", _response(400, body), rows_sent=5)
    assert isinstance(outcome, PermanentError)
    assert outcome.rows == (0, 3)
    assert outcome.error_type == "invalid_parameter"
    assert "bad date" in str(outcome)


@pytest.mark.parametrize(
    ("quota", "daily"),
    [
        ("quota_requests_by_ip", False),
        ("quota_parallel_requests", False),
        ("quota_delegate_requests", False),
        ("quota_requests_by_uid", True),
        ("quota_requests_by_counter_id", True),
    ],
)
def test_throttled_by_quota_kind(quota: str, daily: bool) -> None:
    outcome = classify("contacts", _response(429, _error(429, quota)), rows_sent=1, now=NOW)
    assert isinstance(outcome, ThrottledError)
    assert outcome.quota == quota
    assert outcome.daily is daily
    if daily:
        # Not a retry: the governor waits for the reset of the quota day, which it knows.
        assert outcome.retry_after is None
    else:
        assert outcome.retry_after is None
        assert RetryPolicy(throttle_floor_s=1.0).delay(outcome, 1) >= 1.0


def test_retry_after_is_honoured() -> None:
    outcome = classify(
        "contacts", _response(429, _error(429, "quota_requests_by_ip"), {"Retry-After": "7"})
    )
    assert isinstance(outcome, ThrottledError)
    assert outcome.retry_after == 7
    assert RetryPolicy().delay(outcome, 5) == 7
    assert retry_after_seconds("Sun, 02 Mar 2025 21:00:30 GMT", NOW) == 30
    assert retry_after_seconds("soon") is None


@pytest.mark.parametrize(
    ("status", "kind"), [(401, "unauthorized"), (403, "access_denied"), (404, "not_found")]
)
def test_setup_errors(status: int, kind: str) -> None:
    assert isinstance(
        classify("orders", _response(status, _error(status, kind)), rows_sent=1), SetupError
    )


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_unclear(status: int) -> None:
    outcome = classify("orders", _response(status, _error(status, "backend_error")), rows_sent=1)
    assert isinstance(outcome, TransientError)
    assert outcome.unclear


def test_transport_errors() -> None:
    request = httpx.Request("POST", "http://x")
    assert not classify_exception("orders", httpx.ConnectError("no", request=request)).unclear
    assert classify_exception("orders", httpx.ReadTimeout("slow", request=request)).unclear
    assert classify_exception("orders", httpx.RemoteProtocolError("eof", request=request)).unclear


def test_backoff_is_full_jitter_and_capped() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=8.0)
    delays = [policy.backoff(10) for _ in range(200)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert max(delays) > 4.0  # jitter spreads over the whole range
    assert all(0 <= policy.backoff(1) <= 1.0 for _ in range(50))


def test_too_large_requests_are_permanent_with_one_error_type() -> None:
    """A proxy's 413 (HTML body) and Metrica's 400 too_much_rows both say "split me"."""
    html = httpx.Response(
        413, text="<html><body><h1>413 Request Entity Too Large</h1></body></html>"
    )
    proxy = classify("orders", html, rows_sent=5000)
    assert isinstance(proxy, PermanentError)
    assert proxy.error_type in TOO_LARGE_TYPES
    rows = classify("orders", _response(400, _error(400, "too_much_rows", "orders")), rows_sent=9)
    assert isinstance(rows, PermanentError)
    assert rows.error_type in TOO_LARGE_TYPES
    assert rows.rows == ()
