"""Reconciling uploads whose answer was never read, against the sandbox's last_uploadings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.metrica.quota import QuotaGovernor
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.steps import reconcile
from metrica_bridge.steps.reconcile import Reconciler
from metrica_bridge.store import open_store
from metrica_bridge.store.base import Store, UploadIntent
from tests.support.stack import COUNTER, TOKEN


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 'state.db'}")


@pytest.fixture
async def client(sandbox: SandboxServer) -> AsyncIterator[MetricaClient]:
    governor = QuotaGovernor(requests_per_second=100)
    async with MetricaClient(
        api_url=sandbox.url, counter_id=COUNTER, token=SecretStr(TOKEN), governor=governor
    ) as c:
        yield c


async def _contacts(client: MetricaClient, n: int) -> str:
    result = await client.upload_contacts([{"uniq_id": f"c{i}"} for i in range(n)])
    return result.uploading_id


def _intent(intent_id: str, owner: str, records: int, started: datetime) -> UploadIntent:
    return UploadIntent(intent_id, owner, "contacts", records, started)


async def test_applied_absent_and_siblings(store: Store, client: MetricaClient) -> None:
    started = datetime.now(UTC) - timedelta(milliseconds=200)
    # The dead run "dead" wrote three intents of 3 records; two uploads of 3 reached Metrica.
    for name in ("a", "b", "c"):
        store.begin_upload(_intent(name, "dead", 3, started), [f"e-{name}"])
        started += timedelta(milliseconds=1)
    first, second = await _contacts(client, 3), await _contacts(client, 3)
    store.begin_upload(_intent("lonely", "dead", 5, started), ["e-lonely"])  # never arrived
    reconciler = Reconciler(store, client, ZoneInfo("Europe/Moscow"))
    intents = store.inflight(["e-a", "e-b", "e-c", "e-lonely"])
    assert await reconciler.applied(intents["e-a"]) == first
    assert await reconciler.applied(intents["e-b"]) == second
    assert await reconciler.applied(intents["e-c"]) is None
    assert await reconciler.applied(intents["e-lonely"]) is None
    # Resolved for good: a second look asks nothing and says the same.
    assert store.inflight(["e-a"])["e-a"].uploading_id == first
    assert store.known_uploads(started - timedelta(minutes=1)) == {first, second}


async def test_an_upload_another_live_process_may_own_is_never_taken(
    store: Store, client: MetricaClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "SETTLE", timedelta(seconds=0))
    started = datetime.now(UTC)
    store.begin_upload(_intent("mine", "dead", 2, started), ["e-mine"])
    store.begin_upload(_intent("theirs", "alive", 2, started), ["e-theirs"])  # still waiting
    await _contacts(client, 2)
    reconciler = Reconciler(store, client, ZoneInfo("Europe/Moscow"))
    # Ambiguous: sent again rather than risk crediting someone else's upload.
    assert await reconciler.applied(store.inflight(["e-mine"])["e-mine"]) is None


async def test_a_live_rival_that_resolves_frees_the_match(
    store: Store, client: MetricaClient
) -> None:
    started = datetime.now(UTC)
    store.begin_upload(_intent("mine", "dead", 2, started), ["e-mine"])
    store.begin_upload(_intent("theirs", "alive", 2, started), ["e-theirs"])
    theirs, mine = await _contacts(client, 2), await _contacts(client, 2)

    async def rival_answers() -> None:
        await asyncio.sleep(0.5)
        store.finish_upload("theirs", theirs)

    reconciler = Reconciler(store, client, ZoneInfo("Europe/Moscow"))
    found, _ = await asyncio.gather(
        reconciler.applied(store.inflight(["e-mine"])["e-mine"]), rival_answers()
    )
    assert found == mine
