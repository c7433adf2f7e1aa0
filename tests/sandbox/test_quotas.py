"""Quotas (metrica-api.md §12): 429 with the right ``quota_*`` type, never touching data."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from metrica_bridge.sandbox import QuotaLimits, SandboxServer
from metrica_bridge.sandbox.quotas import Quotas
from tests.sandbox.conftest import COUNTER, OTHER_COUNTER, TOKEN, error_of

DAY = 86_400

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


# -- quota days of any length ------------------------------------------------------------------


class _Clock:
    """Both clocks a Quotas reads, moved by hand."""

    def __init__(self, utc: datetime) -> None:
        self.utc = utc
        self.mono = 0.0

    def advance(self, seconds: float) -> None:
        self.utc += timedelta(seconds=seconds)
        self.mono += seconds

    def quotas(self, limits: QuotaLimits) -> Quotas:
        return Quotas(limits, monotonic=lambda: self.mono, utc_now=lambda: self.utc)


def _call(quotas: Quotas, user: str = "tok", counter_id: int = 1) -> str | None:
    refused = quotas.admit(user, counter_id, "ip")
    if refused is None:
        quotas.release(user)
    return refused


def _at(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


@pytest.mark.parametrize("day_s", [1, 7, 3600, DAY, 90_000])
def test_quota_days_are_intervals_of_unix_time(day_s: int) -> None:
    k = 1_740_000_000 // day_s
    clock = _Clock(_at((k + 1) * day_s - 0.25))  # a quarter second before the day ends
    quotas = clock.quotas(QuotaLimits(daily=2, day_s=day_s))
    assert quotas.day() == k

    assert [_call(quotas), _call(quotas), _call(quotas)] == [None, None, "quota_requests_by_uid"]
    reset = _at((k + 1) * day_s).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert quotas.message("quota_requests_by_uid").endswith(f"(reset {reset})")

    clock.advance(0.25)

    assert quotas.day() == k + 1
    assert [_call(quotas), _call(quotas), _call(quotas)] == [None, None, "quota_requests_by_uid"]


def test_counter_quota_is_shared_by_tokens_within_a_day() -> None:
    clock = _Clock(datetime(2025, 3, 2, 10, 30, tzinfo=UTC))
    quotas = clock.quotas(QuotaLimits(daily=2, day_s=3600))
    assert [_call(quotas, "a"), _call(quotas, "a")] == [None, None]
    assert _call(quotas, "b") == "quota_requests_by_counter_id"
    assert _call(quotas, "b", counter_id=2) is None
    assert "(reset 2025-03-02T11:00:00Z)" in quotas.message("quota_requests_by_counter_id")

    clock.advance(30 * 60)  # 11:00:00, a new quota day

    assert _call(quotas, "b") is None


def test_counts_are_kept_per_day_index_when_the_day_length_changes() -> None:
    clock = _Clock(datetime(2025, 3, 2, 12, 0, tzinfo=UTC))
    quotas = clock.quotas(QuotaLimits(daily=1))
    assert (_call(quotas), _call(quotas)) == (None, "quota_requests_by_uid")
    full_day = quotas.day()

    quotas.limits.day_s = 60
    assert quotas.day() != full_day
    assert _call(quotas) is None  # another index: nothing used there yet

    quotas.limits.day_s = DAY
    assert _call(quotas) == "quota_requests_by_uid"  # back on the index already spent
    assert set(quotas.stats()["requests_by_quota_day"]["1"]) == {
        str(full_day), str(int(clock.utc.timestamp() // 60)),
    }  # fmt: skip


def test_stats_count_admitted_and_refused_requests_per_quota_day() -> None:
    clock = _Clock(_at(1000 * 3600 + 3599))
    quotas = clock.quotas(QuotaLimits(daily=2, parallel=1, day_s=3600))
    _call(quotas, counter_id=7)
    held = quotas.admit("tok", 7, "ip")  # keeps its parallel slot
    assert held is None
    assert quotas.admit("tok", 7, "ip") == "quota_parallel_requests"
    quotas.release("tok")
    assert _call(quotas, counter_id=7) == "quota_requests_by_uid"
    quotas.note_refused("quota_requests_by_ip")  # what an injected burst does
    clock.advance(1)
    _call(quotas, counter_id=7)
    _call(quotas, "other", counter_id=8)

    assert quotas.stats() == {
        "requests_today_by_counter": {"7": 1, "8": 1},
        "quota_day_s": 3600,
        "quota_day": 1001,
        "requests_per_day": 2,
        "requests_by_quota_day": {"7": {"1000": 2, "1001": 1}, "8": {"1001": 1}},
        "refused_by_quota_day": {
            "1000": {
                "quota_parallel_requests": 1,
                "quota_requests_by_uid": 1,
                "quota_requests_by_ip": 1,
            }
        },
    }

    quotas.reset()

    assert quotas.stats()["requests_by_quota_day"] == {}
    assert quotas.stats()["refused_by_quota_day"] == {}


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="day_s"):
        QuotaLimits(day_s=0)
    with pytest.raises(ValueError, match="daily"):
        QuotaLimits(daily=0)


# -- over HTTP ---------------------------------------------------------------------------------


def test_stats_and_the_429_name_the_quota_day(sb: SandboxServer, api: httpx.Client) -> None:
    sb.set_faults(
        requests_per_day=2, quota_burst={"count": 1, "error_type": "quota_requests_by_ip"}
    )
    day = int(time.time() // DAY)
    codes = [api.post(CONTACTS, json=_contact(i)).status_code for i in range(4)]
    refused = api.post(CONTACTS, json=_contact(9))
    if int(time.time() // DAY) != day:
        pytest.skip("ran across 00:00 GMT")

    assert codes == [429, 200, 200, 429]
    _, error_type, _ = error_of(refused)
    assert error_type == "quota_requests_by_uid"
    reset = _at((day + 1) * DAY).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert refused.json()["message"].endswith(f"(reset {reset})")
    assert sb.stats() == {
        "requests_today_by_counter": {str(COUNTER): 2},
        "quota_day_s": DAY,
        "quota_day": day,
        "requests_per_day": 2,
        "requests_by_quota_day": {str(COUNTER): {str(day): 2}},
        "refused_by_quota_day": {str(day): {"quota_requests_by_ip": 1, "quota_requests_by_uid": 2}},
    }


def test_short_quota_days_over_http(sb: SandboxServer, api: httpx.Client) -> None:
    """A one-second quota day in real time: no day admits more than its budget."""
    state = sb.set_faults(requests_per_day=2, quota_day_s=1)
    assert (state["requests_per_day"], state["daily_quota"], state["quota_day_s"]) == (2, 2, 1)
    codes: list[int] = []
    deadline = time.time() + 2.6
    while time.time() < deadline:
        sent = time.time()
        response = api.get("/last_uploadings")
        answered = time.time()
        codes.append(response.status_code)
        if response.status_code == 429:
            found = re.search(r"\(reset (\S+)\)", response.json()["message"])
            assert found is not None
            reset = datetime.strptime(found.group(1), "%Y-%m-%dT%H:%M:%S%z").timestamp()
            assert reset == int(reset)
            assert sent < reset <= answered + 1  # the end of the day the server refused in
        time.sleep(0.05)

    stats = sb.stats()
    per_day = stats["requests_by_quota_day"][str(COUNTER)]
    assert max(per_day.values()) <= 2
    assert sum(1 for n in per_day.values() if n == 2) >= 2  # a full budget on several days
    assert sum(per_day.values()) == codes.count(200)
    refused = stats["refused_by_quota_day"]
    assert {t for types in refused.values() for t in types} == {"quota_requests_by_uid"}
    assert sum(n for types in refused.values() for n in types.values()) == codes.count(429)
    assert set(codes) == {200, 429}

    sb.reset()

    assert (sb.stats()["quota_day_s"], sb.stats()["requests_per_day"]) == (DAY, 1_000_000)


def test_configured_defaults_are_what_reset_restores() -> None:
    with SandboxServer(
        tokens=[TOKEN], counter_ids=[COUNTER], requests_per_day=3, quota_day_s=600
    ) as server:
        state = server.faults()
        assert (state["requests_per_day"], state["daily_quota"], state["quota_day_s"]) == (
            3, 3, 600,
        )  # fmt: skip
        server.set_faults(requests_per_day=50, quota_day_s=5)
        server.reset()
        state = server.faults()
        assert (state["requests_per_day"], state["quota_day_s"]) == (3, 600)

        url = f"{server.url}/cdp/api/v1/counter/{COUNTER}/last_uploadings"
        headers = {"Authorization": f"OAuth {TOKEN}"}
        day = int(time.time() // 600)
        codes = [httpx.get(url, headers=headers).status_code for _ in range(4)]
        if server.stats()["quota_day"] != day:
            pytest.skip("ran across a quota day's end")
        assert codes == [200, 200, 200, 429]


def test_server_refuses_limits_below_one() -> None:
    with pytest.raises(ValueError, match="daily"):
        SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], requests_per_day=0)
    with pytest.raises(ValueError, match="day_s"):
        SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], quota_day_s=0)
