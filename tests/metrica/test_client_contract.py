"""The client against a real sandbox server: every endpoint, success and each failure class."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import generate_latest

from metrica_bridge.metrica.errors import (
    PermanentError,
    RetryExhausted,
    SetupError,
    TransientError,
    UnclearOutcome,
)
from metrica_bridge.metrica.quota import QuotaGovernor
from metrica_bridge.metrica.retry import RetryPolicy
from metrica_bridge.metrics import REGISTRY
from metrica_bridge.sandbox import SandboxServer
from tests.metrica.conftest import COUNTER, TOKEN, ClientFactory, contact, order


async def test_counter_timezone(make_client: ClientFactory) -> None:
    async with make_client() as client:
        assert await client.counter_timezone() == "Europe/Moscow"


async def test_upload_contacts_then_orders(
    sandbox: SandboxServer, make_client: ClientFactory
) -> None:
    async with make_client() as client:
        contacts = await client.upload_contacts([contact(1), contact(2)])
        assert contacts.api_validation_status == "PASSED"
        assert contacts.elements_count == 2
        orders = await client.upload_orders([order(1), order(2, "PAID")], merge_mode="SAVE")
        assert orders.elements_count == 2
        assert orders.uploading_id != contacts.uploading_id
    assert {c["uniq_id"] for c in sandbox.contacts(COUNTER)} == {"client-1", "client-2"}
    stored = {o["id"]: o for o in sandbox.orders(COUNTER)}
    assert stored["deal-2"]["order_status"] == "PAID"
    assert [h["uploading_id"] for h in stored["deal-1"]["history"]] == [orders.uploading_id]


async def test_order_statuses_round_trip(make_client: ClientFactory) -> None:
    statuses = [
        {"id": "new", "type": "IN_PROGRESS", "humanized": "Новый", "goal_action_ids": []},
        {"id": "qualified", "type": "OTHER", "humanized": "Лид", "goal_action_ids": ["good_lead"]},
    ]
    async with make_client() as client:
        assert await client.get_order_statuses() == []
        await client.put_order_statuses(statuses)
        got = {s["id"]: s for s in await client.get_order_statuses()}
    assert got["qualified"]["goal_action_ids"] == ["good_lead"]
    assert got["new"]["type"] == "IN_PROGRESS"


async def test_last_uploadings(make_client: ClientFactory) -> None:
    async with make_client() as client:
        first = await client.upload_contacts([contact(1)])
        second = await client.upload_contacts([contact(2)])
        latest = await client.last_uploadings(limit=1)
        both = await client.last_uploadings()
    assert [u["uploading_id"] for u in latest] == [second.uploading_id]
    assert {u["uploading_id"] for u in both} == {first.uploading_id, second.uploading_id}


async def test_transient_503_retried_until_attempts_run_out(
    sandbox: SandboxServer, make_client: ClientFactory
) -> None:
    sandbox.set_faults(error_rate=1.0, error_status=503)
    governor = QuotaGovernor(requests_per_second=10_000, daily_budget=100)
    retry = RetryPolicy(max_attempts=4, budget_s=10, base_s=0.001, cap_s=0.01)
    async with make_client(governor=governor, retry=retry) as client:
        with pytest.raises(RetryExhausted) as caught:
            await client.upload_contacts([contact(1)])
    assert isinstance(caught.value.last, TransientError)
    assert caught.value.last.status == 503
    assert caught.value.attempts == 4
    assert governor.attempts == 4
    assert sandbox.contacts(COUNTER) == []


async def test_outage_is_ridden_out(sandbox: SandboxServer, make_client: ClientFactory) -> None:
    sandbox.set_faults(outage_seconds=0.3)
    async with make_client() as client:
        result = await client.upload_contacts([contact(1)])
    assert result.elements_count == 1
    assert len(sandbox.contacts(COUNTER)) == 1


@pytest.mark.parametrize(
    "quota", ["quota_requests_by_ip", "quota_parallel_requests", "quota_delegate_requests"]
)
async def test_short_quota_429_backs_off_and_resends(
    sandbox: SandboxServer, make_client: ClientFactory, quota: str
) -> None:
    sandbox.set_faults(quota_burst={"count": 2, "error_type": quota})
    governor = QuotaGovernor(requests_per_second=10_000, daily_budget=100)
    async with make_client(governor=governor) as client:
        await client.upload_contacts([contact(1)])
    assert governor.attempts == 3
    assert governor.remaining() == 97  # throttled attempts count too
    assert len(sandbox.contacts(COUNTER)) == 1


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


LATE = 1_740_956_400.0  # 2025-03-02 23:00 GMT


@pytest.mark.parametrize("quota", ["quota_requests_by_uid", "quota_requests_by_counter_id"])
async def test_daily_quota_429_waits_for_the_next_quota_day(
    sandbox: SandboxServer, make_client: ClientFactory, quota: str
) -> None:
    """Metrica's daily quota is spent: the upload waits for the reset (however long: not
    against the retry budget, not as an attempt), nothing else reaches Metrica meanwhile,
    and it is delivered in the next quota day."""
    sandbox.set_faults(quota_burst={"count": 1, "error_type": quota})
    clock = Clock(LATE)
    governor = QuotaGovernor(requests_per_second=10_000, daily_budget=100, clock=clock, poll_s=0.01)
    tight = RetryPolicy(max_attempts=1, budget_s=0.05)  # a quota wait must not spend it
    async with make_client(governor=governor, retry=tight) as client:
        first = asyncio.create_task(client.upload_contacts([contact(1)]))
        await asyncio.sleep(0.3)
        second = asyncio.create_task(client.upload_contacts([contact(2)]))
        await asyncio.sleep(0.3)
        assert not first.done()
        assert not second.done()
        assert governor.attempts == 1  # no hammering while the quota is spent
        assert governor.remaining() == 0
        assert governor.waiting_for_quota()
        clock.now = LATE + 3600  # 00:00 GMT
        results = await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert [r.elements_count for r in results] == [1, 1]
    assert governor.attempts == 3
    assert len(sandbox.contacts(COUNTER)) == 2


async def test_sandbox_daily_quota_is_waited_out_on_short_quota_days(
    sandbox: SandboxServer, make_client: ClientFactory
) -> None:
    """The sandbox's own quota runs out before ours says so: uploads wait for the next quota
    day (2 s long here, on both sides) and are all delivered; none fails."""
    sandbox.set_faults(daily_quota=2, quota_day_s=2)
    governor = QuotaGovernor(
        requests_per_second=10_000, daily_budget=100, quota_day_s=2, poll_s=0.05
    )
    async with make_client(governor=governor) as client:
        results = await asyncio.wait_for(
            asyncio.gather(*(client.upload_contacts([contact(i)]) for i in range(5))), 20
        )
    assert all(r.api_validation_status == "PASSED" for r in results)
    assert len(sandbox.contacts(COUNTER)) == 5
    stats = sandbox.stats()
    assert all(n <= 2 for n in stats["requests_by_quota_day"][str(COUNTER)].values())


async def test_unknown_token_is_a_setup_error(
    sandbox: SandboxServer, make_client: ClientFactory
) -> None:
    governor = QuotaGovernor(requests_per_second=10_000, daily_budget=100)
    async with make_client(token="y0_not-a-known-token-4242", governor=governor) as client:
        with pytest.raises(SetupError) as caught:
            await client.upload_contacts([contact(1)])
    assert caught.value.status == 401
    assert governor.attempts == 1  # never retried
    assert "y0_not-a-known-token-4242" not in str(caught.value) + repr(caught.value)


async def test_rejected_token_is_a_setup_error(
    sandbox: SandboxServer, make_client: ClientFactory
) -> None:
    sandbox.set_faults(reject_token=TOKEN)
    async with make_client() as client:
        with pytest.raises(SetupError) as caught:
            await client.get_order_statuses()
        assert caught.value.status == 403
        sandbox.set_faults(reject_token=None)
        await client.get_order_statuses()


async def test_unknown_counter_is_a_setup_error(make_client: ClientFactory) -> None:
    async with make_client(counter_id=999) as client:
        with pytest.raises(SetupError) as caught:
            await client.upload_orders([order(1)])
        assert caught.value.status == 404
        with pytest.raises(SetupError):
            await client.counter_timezone()


async def test_bad_rows_are_permanent_with_indexes(
    sandbox: SandboxServer, make_client: ClientFactory
) -> None:
    rows = [order(i) for i in range(5)]
    rows[3]["create_date_time"] = "02.03.2025 11:00"
    governor = QuotaGovernor(requests_per_second=10_000, daily_budget=100)
    async with make_client(governor=governor) as client:
        await client.upload_contacts([contact(i) for i in range(5)])
        with pytest.raises(PermanentError) as caught:
            await client.upload_orders(rows)
    assert caught.value.status == 400
    assert caught.value.rows == (3,)
    assert caught.value.error_type == "invalid_parameter"
    assert governor.attempts == 2  # not retried
    assert sandbox.orders(COUNTER) == []


async def test_fifty_concurrent_uploads_keep_three_in_flight(
    sandbox: SandboxServer, make_client: ClientFactory
) -> None:
    # The sandbox enforces 3 parallel requests: one 429 would show as a retry in its log.
    sandbox.set_faults(parallel_limit=3, latency_ms=10)
    governor = QuotaGovernor(max_parallel=3, requests_per_second=10_000, daily_budget=1_000)
    no_retry = RetryPolicy(max_attempts=1, budget_s=10)
    async with make_client(governor=governor, retry=no_retry) as client:
        results = await asyncio.gather(*(client.upload_contacts([contact(i)]) for i in range(50)))
    assert len({r.uploading_id for r in results}) == 50
    assert governor.attempts == 50
    assert governor.max_in_flight_seen == 3
    assert len(sandbox.uploads(COUNTER)) == 50


async def test_per_second_cap_keeps_under_the_ip_quota(
    sandbox: SandboxServer, make_client: ClientFactory
) -> None:
    sandbox.set_faults(per_second_limit=30)  # Metrica's per-IP quota
    governor = QuotaGovernor(requests_per_second=20, daily_budget=1_000)
    no_retry = RetryPolicy(max_attempts=1, budget_s=10)
    async with make_client(governor=governor, retry=no_retry) as client:
        await asyncio.gather(*(client.upload_contacts([contact(i)]) for i in range(25)))
    assert len(sandbox.uploads(COUNTER)) == 25


async def test_daily_budget_is_never_exceeded(
    sandbox: SandboxServer, make_client: ClientFactory
) -> None:
    clock = Clock(LATE)
    governor = QuotaGovernor(
        requests_per_second=10_000, daily_budget=20, reserve=0, clock=clock, poll_s=0.01
    )
    async with make_client(governor=governor) as client:
        uploads = [asyncio.create_task(client.upload_contacts([contact(i)])) for i in range(50)]
        await asyncio.sleep(0.5)
        assert sum(t.done() for t in uploads) == 20
        assert len(sandbox.uploads(COUNTER)) == 20  # the rest wait for the next quota day
        assert governor.remaining() == 0
        clock.now = LATE + 3600  # the next quota day: 20 more, and no more
        await asyncio.sleep(0.5)
        assert len(sandbox.uploads(COUNTER)) == 40
        clock.now = LATE + 3600 + 86_400
        await asyncio.wait_for(asyncio.gather(*uploads), 5)
    assert len(sandbox.uploads(COUNTER)) == 50


async def test_flaky_api_every_record_lands_exactly_once(
    sandbox: SandboxServer, make_client: ClientFactory
) -> None:
    sandbox.set_faults(error_rate=0.3, error_status=503, latency_ms=5, seed=7)
    async with make_client() as client:
        await asyncio.gather(*(client.upload_contacts([contact(i)]) for i in range(40)))
        await asyncio.gather(
            *(client.upload_orders([order(2 * i), order(2 * i + 1)]) for i in range(20))
        )
    orders = sandbox.orders(COUNTER)
    assert sorted(o["id"] for o in orders) == sorted(f"deal-{i}" for i in range(40))
    assert all(len(o["history"]) == 1 for o in orders)
    assert len(sandbox.contacts(COUNTER)) == 40


async def test_applied_then_failed_is_resent_with_update(
    sandbox: SandboxServer, make_client: ClientFactory
) -> None:
    async with make_client() as client:
        await client.upload_contacts([contact(i) for i in range(10)])
        sandbox.set_faults(apply_then_fail_rate=0.5, seed=3)
        for status in ("IN_PROGRESS", "PAID"):
            await asyncio.gather(*(client.upload_orders([order(i, status)]) for i in range(10)))
    orders = sandbox.orders(COUNTER)
    assert len(orders) == 10
    assert all(o["order_status"] == "PAID" for o in orders)
    resent = [o for o in orders if len(o["history"]) > 2]
    assert resent  # some answers were unclear and the upload went again, harmlessly


async def test_unclear_append_is_not_resent(
    sandbox: SandboxServer, make_client: ClientFactory
) -> None:
    governor = QuotaGovernor(requests_per_second=10_000, daily_budget=100)
    async with make_client(governor=governor) as client:
        sandbox.set_faults(apply_then_fail_rate=1.0)
        with pytest.raises(UnclearOutcome):
            await client.upload_contacts([contact(1)], merge_mode="APPEND")
    assert governor.attempts == 1
    assert len(sandbox.contacts(COUNTER)) == 1  # applied once, not twice


async def test_timeout_after_sending_is_unclear(
    sandbox: SandboxServer, make_client: ClientFactory
) -> None:
    sandbox.set_faults(latency_ms=400)
    retry = RetryPolicy(max_attempts=2, budget_s=10, base_s=0.001, cap_s=0.01)
    async with make_client(timeout_s=0.1, retry=retry) as client:
        with pytest.raises(UnclearOutcome):
            await client.upload_orders([order(1)], merge_mode="APPEND")
        with pytest.raises(RetryExhausted) as caught:
            await client.upload_contacts([contact(1)])
    last = caught.value.last
    assert isinstance(last, TransientError)
    assert last.unclear
    assert caught.value.attempts == 2


async def test_token_never_in_errors_reprs_or_metrics(
    sandbox: SandboxServer, make_client: ClientFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.set_faults(error_rate=1.0, error_status=503)
    retry = RetryPolicy(max_attempts=2, budget_s=10, base_s=0.001, cap_s=0.01)
    async with make_client(retry=retry) as client:
        with pytest.raises(RetryExhausted) as caught:
            await client.upload_contacts([contact(1)])
        texts = [str(caught.value), repr(caught.value), repr(caught.value.last), repr(client)]
        texts += [repr(client.governor), repr(client.__dict__)]
    sandbox.set_faults(error_rate=0.0, reject_token=TOKEN)
    async with make_client() as client:
        with pytest.raises(SetupError) as setup:
            await client.upload_contacts([contact(1)])
        texts += [str(setup.value), repr(setup.value)]
    texts.append(generate_latest(REGISTRY).decode())
    captured = capsys.readouterr()
    texts += [captured.out, captured.err]
    assert not [t for t in texts if TOKEN in t]
