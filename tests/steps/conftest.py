"""A real SQLite store and a Metrica client on the sandbox, shared by the sender's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.metrica.quota import QuotaGovernor
from metrica_bridge.metrica.retry import RetryPolicy
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.store import open_store
from metrica_bridge.store.base import Store
from tests.support.stack import COUNTER, TOKEN


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 'state.db'}")


@pytest.fixture
async def client(sandbox: SandboxServer) -> AsyncIterator[MetricaClient]:
    governor = QuotaGovernor(requests_per_second=1_000, daily_budget=1_000_000)
    retry = RetryPolicy(max_attempts=3, budget_s=5, base_s=0.01, cap_s=0.05)
    async with MetricaClient(
        api_url=sandbox.url,
        counter_id=COUNTER,
        token=SecretStr(TOKEN),
        governor=governor,
        retry=retry,
    ) as c:
        yield c
