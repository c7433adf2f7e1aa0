"""A real sandbox server per module, reset before each test, and a client factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.metrica.quota import QuotaGovernor
from metrica_bridge.metrica.retry import RetryPolicy
from metrica_bridge.sandbox import SandboxServer

# Distinctive, so a leak would be found by a plain substring search.
TOKEN = "y0_AgAAAAB-sandbox-secret-7f3a9c"
OTHER_TOKEN = "y0_AgAAAAB-second-secret-0b1d2e"
COUNTER = 42
FAST_RETRY = RetryPolicy(
    max_attempts=30, budget_s=20.0, base_s=0.005, cap_s=0.05, throttle_floor_s=0.02
)

ClientFactory = Callable[..., Any]


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[SandboxServer]:
    with SandboxServer(
        tokens=[TOKEN, OTHER_TOKEN],
        counter_ids=[COUNTER],
        timezone="Europe/Moscow",
        host="127.0.0.1",
        port=0,
    ) as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> SandboxServer:
    sandbox_server.reset()
    # Governors in these tests run unthrottled; the per-IP cap has its own test.
    sandbox_server.set_faults(per_second_limit=100_000)
    return sandbox_server


@pytest.fixture
def make_client(sandbox: SandboxServer) -> ClientFactory:
    @asynccontextmanager
    async def factory(
        *,
        token: str = TOKEN,
        counter_id: int = COUNTER,
        governor: QuotaGovernor | None = None,
        retry: RetryPolicy = FAST_RETRY,
        timeout_s: float = 5.0,
    ) -> AsyncIterator[MetricaClient]:
        client = MetricaClient(
            api_url=sandbox.url,
            counter_id=counter_id,
            token=SecretStr(token),
            governor=governor or QuotaGovernor(requests_per_second=10_000, daily_budget=100_000),
            retry=retry,
            timeout_s=timeout_s,
        )
        async with client:
            yield client

    return factory


def contact(i: int) -> dict[str, Any]:
    return {"uniq_id": f"client-{i}", "client_ids": [str(1712345678901234567 + i)]}


def order(i: int, status: str = "IN_PROGRESS", client: int | None = None) -> dict[str, Any]:
    created = datetime(2025, 3, 2, 8, 0, tzinfo=UTC) + timedelta(minutes=i)
    local = created.astimezone(ZoneInfo("Europe/Moscow"))
    return {
        "id": f"deal-{i}",
        "client_uniq_id": f"client-{i if client is None else client}",
        "client_type": "CONTACT",
        "create_date_time": local.strftime("%Y-%m-%d %H:%M:%S"),
        "order_status": status,
        "revenue": 100 + i,
    }
