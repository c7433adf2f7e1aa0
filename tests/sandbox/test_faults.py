"""Injected faults: errors, outages, latency, rejected tokens, quota bursts, unclear outcomes."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from metrica_bridge.sandbox import SandboxServer
from tests.sandbox.conftest import COUNTER, TOKEN, error_of, order

CONTACTS = "/data/contacts/json?merge_mode=SAVE"


def _contact(i: int) -> dict[str, object]:
    return {"contacts": [{"uniq_id": f"c{i}"}]}


@pytest.mark.parametrize(("status", "error_type"), [(503, "backend_error"), (504, "timeout")])
def test_error_rate_one_fails_every_request_before_touching_data(
    sb: SandboxServer, api: httpx.Client, status: int, error_type: str
) -> None:
    sb.set_faults(error_rate=1.0, error_status=status)

    for i in range(3):
        assert error_of(api.post(CONTACTS, json=_contact(i)))[:2] == (status, error_type)
    assert error_of(api.get("/schema/order_statuses"))[:2] == (status, error_type)

    assert sb.contacts(COUNTER) == []
    assert sb.uploads(COUNTER) == []


def test_error_rate_with_a_seed_is_partial_and_repeatable(
    sb: SandboxServer, api: httpx.Client
) -> None:
    def run() -> list[int]:
        sb.set_faults(error_rate=0.5, seed=7)
        return [api.get("/last_uploadings").status_code for _ in range(30)]

    first, second = run(), run()

    assert first == second
    assert set(first) == {200, 503}


def test_outage_then_recovery(sb: SandboxServer, api: httpx.Client) -> None:
    state = sb.set_faults(outage_seconds=0.5)
    assert 0 < state["outage_seconds"] <= 0.5

    assert error_of(api.post(CONTACTS, json=_contact(1)))[:2] == (503, "backend_error")
    time.sleep(0.6)
    assert api.post(CONTACTS, json=_contact(2)).status_code == 200
    assert [c["uniq_id"] for c in sb.contacts(COUNTER)] == ["c2"]


def test_latency_delays_answers(sb: SandboxServer, api: httpx.Client) -> None:
    sb.set_faults(latency_ms=200)
    started = time.monotonic()
    api.get("/last_uploadings")
    assert time.monotonic() - started >= 0.2  # a lower bound only: never a speed assertion


@pytest.mark.parametrize("error_type", ["invalid_token", "access_denied"])
def test_rejected_token(sb: SandboxServer, api: httpx.Client, error_type: str) -> None:
    state = sb.set_faults(reject_token=TOKEN, reject_error_type=error_type)
    assert state["reject_token"] == "***"
    assert TOKEN not in str(state)

    response = api.post(CONTACTS, json=_contact(1))

    assert error_of(response)[:2] == (403, error_type)
    assert TOKEN not in response.text
    other = httpx.get(
        f"{sb.url}/cdp/api/v1/counter/{COUNTER}/last_uploadings",
        headers={"Authorization": "OAuth second-token"},
    )
    assert other.status_code == 200
    sb.set_faults(reject_token=None)
    assert api.post(CONTACTS, json=_contact(1)).status_code == 200


@pytest.mark.parametrize(
    "quota", ["quota_requests_by_ip", "quota_requests_by_uid", "quota_delegate_requests"]
)
def test_quota_burst(sb: SandboxServer, api: httpx.Client, quota: str) -> None:
    sb.set_faults(quota_burst={"count": 2, "error_type": quota})

    codes = [error_of(api.post(CONTACTS, json=_contact(i)))[:2] for i in range(2)]
    third = api.post(CONTACTS, json=_contact(3))

    assert codes == [(429, quota), (429, quota)]
    assert third.status_code == 200
    assert [c["uniq_id"] for c in sb.contacts(COUNTER)] == ["c3"]
    assert sb.faults()["quota_burst"]["count"] == 0


def test_apply_then_fail_applies_the_upload_and_answers_503(
    sb: SandboxServer, seeded: httpx.Client
) -> None:
    sb.set_faults(apply_then_fail_rate=1.0)

    response = seeded.post("/data/orders/json?merge_mode=SAVE", json={"orders": [order()]})

    assert error_of(response)[:2] == (503, "backend_error")
    [stored] = sb.orders(COUNTER)
    upload = sb.uploads(COUNTER)[-1]
    assert (upload["status"], upload["http_status"]) == ("accepted", 503)
    assert stored["history"][0]["uploading_id"] == upload["uploading_id"]
    # The client can find the upload it never got an answer for.
    sb.set_faults(apply_then_fail_rate=0.0)
    latest = seeded.get("/last_uploadings", params={"limit": 1}).json()["uploadings"]
    assert latest[0]["uploading_id"] == upload["uploading_id"]


def test_faults_merge_and_report_the_full_state(sb: SandboxServer) -> None:
    sb.set_faults(error_rate=0.3, latency_ms=50)
    state = sb.set_faults(daily_quota=100)

    assert state == {
        "error_rate": 0.3,
        "error_status": 503,
        "latency_ms": 50.0,
        "outage_seconds": 0.0,
        "requests_per_day": 100,
        "daily_quota": 100,
        "quota_day_s": 86_400,
        "parallel_limit": 3,
        "per_second_limit": 10_000,
        "reject_token": None,
        "reject_error_type": "invalid_token",
        "quota_burst": {"count": 0, "error_type": "quota_requests_by_ip"},
        "apply_then_fail_rate": 0.0,
        "seed": None,
        "max_request_rows": 10_000,
        "max_request_bytes": None,
        "error_locations": True,
        "invalid_as_200": False,
    }
    sb.reset()
    assert sb.faults()["error_rate"] == 0.0


@pytest.mark.parametrize("key", ["requests_per_day", "daily_quota"])
def test_requests_per_day_and_its_alias_are_one_setting(sb: SandboxServer, key: str) -> None:
    state = sb.set_faults(**{key: 7})
    assert (state["requests_per_day"], state["daily_quota"]) == (7, 7)
    assert sb.set_faults(requests_per_day=8, daily_quota=8)["daily_quota"] == 8


def test_new_settings_are_set_and_reset(sb: SandboxServer) -> None:
    state = sb.set_faults(
        quota_day_s=60, max_request_rows=5, max_request_bytes=1024, error_locations=False
    )
    assert (
        state["quota_day_s"],
        state["max_request_rows"],
        state["max_request_bytes"],
        state["error_locations"],
    ) == (60, 5, 1024, False)
    assert sb.set_faults(max_request_bytes=None)["max_request_bytes"] is None

    sb.reset()

    state = sb.faults()
    assert (
        state["quota_day_s"],
        state["max_request_rows"],
        state["max_request_bytes"],
        state["error_locations"],
    ) == (86_400, 10_000, None, True)


@pytest.mark.parametrize(
    "body",
    [
        {"error_rate": 1.5},
        {"error_status": 404},
        {"latency_ms": -1},
        {"daily_quota": 0},
        {"requests_per_day": 0},
        {"requests_per_day": 2.5},
        {"requests_per_day": 5, "daily_quota": 6},
        {"quota_day_s": 0},
        {"quota_day_s": True},
        {"max_request_rows": 0},
        {"max_request_rows": None},
        {"max_request_bytes": 0},
        {"max_request_bytes": "1k"},
        {"error_locations": "no"},
        {"error_locations": 0},
        {"quota_burst": {"count": 2, "error_type": "backend_error"}},
        {"reject_error_type": "unauthorized"},
        {"errorRate": 0.1},
        {"error_rate": 0.1, "seed": "x"},
    ],
)
def test_invalid_faults_change_nothing(sb: SandboxServer, body: dict[str, Any]) -> None:
    before = sb.faults()
    response = httpx.post(f"{sb.url}/_sandbox/faults", json=body)
    assert error_of(response)[:2] == (400, "invalid_parameter")
    assert sb.faults() == before
