"""Reconciliation pages ``last_uploadings`` back by time, with ``datetime_offset`` in UTC: in a
counter west of UTC a local-time offset would ask for uploads hours too early and find none
(issue 15, item 9)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.metrica.quota import QuotaGovernor
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.steps.reconcile import Reconciler
from metrica_bridge.store import open_store
from metrica_bridge.store.base import Store, UploadIntent
from tests.support.stack import COUNTER, TOKEN

ZONE = "America/New_York"  # UTC-5 / UTC-4


@pytest.fixture
def western() -> Iterator[SandboxServer]:
    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], timezone=ZONE) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


@pytest.fixture
async def client(western: SandboxServer) -> AsyncIterator[MetricaClient]:
    async with MetricaClient(
        api_url=western.url,
        counter_id=COUNTER,
        token=SecretStr(TOKEN),
        governor=QuotaGovernor(requests_per_second=100),
    ) as c:
        yield c


async def test_the_lost_upload_is_found_behind_newer_ones_in_a_counter_west_of_utc(
    store: Store, client: MetricaClient
) -> None:
    started = datetime.now(UTC) - timedelta(milliseconds=100)
    store.begin_upload(UploadIntent("lost", "dead", "contacts", 3, started), ["e-lost"])
    lost = await client.upload_contacts([{"uniq_id": f"c{i}"} for i in range(3)])
    await asyncio.sleep(1.05)  # the list is to the second: the newer uploads in a later one
    for i in range(3):  # other uploads after it, more than one page of the list
        await client.upload_contacts([{"uniq_id": f"later-{i}"}])

    reconciler = Reconciler(store, client, ZoneInfo(ZONE), page=2)
    found = await reconciler.applied(store.inflight(["e-lost"])["e-lost"])

    assert found == lost.uploading_id
