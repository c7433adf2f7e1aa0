"""A request that never reached Metrica (no connection made) does not spend the daily budget
(issue 16, item 17); one that may have reached it does."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.metrica.errors import RetryExhausted
from metrica_bridge.metrica.quota import QuotaGovernor
from metrica_bridge.metrica.retry import RetryPolicy
from metrica_bridge.store import open_store
from metrica_bridge.store.budget import StoreBudget

COUNTER = 42
FAST = RetryPolicy(max_attempts=5, budget_s=10, base_s=0.001, cap_s=0.005)


def _transport(failures: list[Exception]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop(0)
        return httpx.Response(200, json={"counter": {"time_zone_name": "Europe/Moscow"}})

    return httpx.MockTransport(handler)


async def _used(governor: QuotaGovernor) -> int:
    return governor.daily_budget - await governor.refresh()


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("connection refused"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.PoolTimeout("no connection free"),
    ],
)
async def test_connect_failures_are_refunded(failure: Exception, tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    governor = QuotaGovernor(
        requests_per_second=10_000, daily_budget=100, backend=StoreBudget(store)
    )
    request = httpx.Request("GET", "http://metrica.invalid/")
    failure.request = request  # type: ignore[attr-defined]
    async with MetricaClient(
        api_url="http://metrica.invalid",
        counter_id=COUNTER,
        token=SecretStr("t0ken-for-tests"),
        governor=governor,
        retry=FAST,
        transport=_transport([failure, failure]),
    ) as client:
        assert await client.counter_timezone() == "Europe/Moscow"
    assert governor.attempts == 3
    assert await _used(governor) == 1  # only the attempt that reached Metrica
    store.close()


async def test_a_read_timeout_is_spent(tmp_path: Path) -> None:
    """The request left: Metrica may have counted it."""
    governor = QuotaGovernor(requests_per_second=10_000, daily_budget=100)
    async with MetricaClient(
        api_url="http://metrica.invalid",
        counter_id=COUNTER,
        token=SecretStr("t0ken-for-tests"),
        governor=governor,
        retry=FAST,
        transport=_transport([httpx.ReadTimeout("read timed out")]),
    ) as client:
        assert await client.counter_timezone() == "Europe/Moscow"
    assert await _used(governor) == 2


async def test_refunds_when_the_retries_run_out(tmp_path: Path) -> None:
    governor = QuotaGovernor(requests_per_second=10_000, daily_budget=100)
    async with MetricaClient(
        api_url="http://metrica.invalid",
        counter_id=COUNTER,
        token=SecretStr("t0ken-for-tests"),
        governor=governor,
        retry=RetryPolicy(max_attempts=3, budget_s=10, base_s=0.001, cap_s=0.005),
        transport=_transport([httpx.ConnectError("refused")] * 5),
    ) as client:
        with pytest.raises(RetryExhausted):
            await client.counter_timezone()
    assert governor.attempts == 3
    assert await _used(governor) == 0
