"""Quotas (metrica-api.md §12): 429 with the right ``quota_*`` type, never touching data."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx

from metrica_bridge.sandbox import QuotaLimits, SandboxServer
from metrica_bridge.sandbox.quotas import Quotas
from tests.sandbox.conftest import COUNTER, OTHER_COUNTER, TOKEN, error_of

CONTACTS = "/data/contacts/json?merge_mode=SAVE"


def _contact(i: int) -> dict[str, object]:
    return {"contacts": [{"uniq_id": f"c{i}"}]}


async def test_parallel_requests_per_token(sb: SandboxServer) -> None:
    sb.set_faults(latency_ms=400, parallel_limit=3)
    async with httpx.AsyncClient(
        base_url=f"{sb.url}/cdp/api/v1/counter/{COUNTER}",
        headers={"Authorization": f"OAuth {TOKEN}"},
        timeout=10,
    ) as client:
        responses = await asyncio.gather(
            *(client.post(CONTACTS, json=_contact(i)) for i in range(8))
        )

    refused = [r for r in responses if r.status_code == 429]
    accepted = [r for r in responses if r.status_code == 200]
    assert len(refused) + len(accepted) == 8
    assert refused, "8 concurrent requests against a limit of 3 must meet the cap"
    assert len(accepted) <= 3
    assert {error_of(r)[:2] for r in refused} == {(429, "quota_parallel_requests")}
    # Quota answers never touch data: only the accepted uploads exist.
    assert len(sb.uploads(COUNTER)) == len(accepted)
    assert len(sb.contacts(COUNTER)) == len(accepted)


async def test_parallel_limit_is_per_token(sb: SandboxServer) -> None:
    sb.set_faults(latency_ms=300, parallel_limit=1)
    url = f"{sb.url}/cdp/api/v1/counter/{COUNTER}"
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        first, second = await asyncio.gather(
            client.post(CONTACTS, json=_contact(1), headers={"Authorization": f"OAuth {TOKEN}"}),
            client.post(
                CONTACTS, json=_contact(2), headers={"Authorization": "OAuth second-token"}
            ),
        )
    assert (first.status_code, second.status_code) == (200, 200)


def test_requests_per_second(sb: SandboxServer, api: httpx.Client) -> None:
    sb.set_faults(per_second_limit=5)

    codes = [api.post(CONTACTS, json=_contact(i)).status_code for i in range(12)]

    assert codes.count(200) <= 5
    assert 429 in codes
    refused = api.post(CONTACTS, json=_contact(99))
    if refused.status_code == 429:
        assert error_of(refused)[:2] == (429, "quota_requests_by_ip")
    assert len(sb.contacts(COUNTER)) == codes.count(200)
    time.sleep(1.1)  # the window slides on
    assert api.post(CONTACTS, json=_contact(100)).status_code == 200


def test_daily_quota_per_token(sb: SandboxServer, api: httpx.Client) -> None:
    sb.set_faults(daily_quota=3)
    for i in range(3):
        assert api.post(CONTACTS, json=_contact(i)).status_code == 200

    refused = api.post(CONTACTS, json=_contact(3))
    reads_too = api.get("/last_uploadings")

    assert error_of(refused)[:2] == (429, "quota_requests_by_uid")
    assert error_of(reads_too)[:2] == (429, "quota_requests_by_uid")
    assert len(sb.contacts(COUNTER)) == 3
    assert len(sb.uploads(COUNTER)) == 3
    # Another user of the same counter still has a quota of their own, the counter does not.
    other = httpx.post(
        f"{sb.url}/cdp/api/v1/counter/{COUNTER}{CONTACTS}",
        json=_contact(4),
        headers={"Authorization": "OAuth second-token"},
    )
    assert error_of(other)[:2] == (429, "quota_requests_by_counter_id")
    elsewhere = httpx.post(
        f"{sb.url}/cdp/api/v1/counter/{OTHER_COUNTER}{CONTACTS}",
        json=_contact(4),
        headers={"Authorization": "OAuth second-token"},
    )
    assert elsewhere.status_code == 200


def test_reset_restores_default_quotas(sb: SandboxServer, api: httpx.Client) -> None:
    sb.set_faults(daily_quota=1)
    api.post(CONTACTS, json=_contact(1))
    assert api.post(CONTACTS, json=_contact(2)).status_code == 429

    sb.reset()

    assert api.post(CONTACTS, json=_contact(3)).status_code == 200


def test_documented_defaults() -> None:
    with SandboxServer(tokens=["t"], counter_ids=[1]) as server:
        faults = server.faults()
    assert (faults["parallel_limit"], faults["per_second_limit"], faults["daily_quota"]) == (
        3, 30, 5000,
    )  # fmt: skip


def test_daily_quota_resets_at_midnight_gmt() -> None:
    now = [datetime(2025, 3, 2, 23, 59, 59, tzinfo=UTC)]
    clock = [0.0]
    quotas = Quotas(QuotaLimits(daily=2), monotonic=lambda: clock[0], utc_now=lambda: now[0])
    for _ in range(2):
        assert quotas.admit("tok", 1, "ip") is None
        quotas.release("tok")
        clock[0] += 1
    assert quotas.admit("tok", 1, "ip") == "quota_requests_by_uid"

    now[0] += timedelta(seconds=1)  # 00:00:00 GMT

    assert quotas.admit("tok", 1, "ip") is None
