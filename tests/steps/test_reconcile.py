"""Reconciling uploads whose answer was never read, against the sandbox's last_uploadings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from metrica_bridge.config import Settings
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


async def test_same_size_candidates_are_ambiguous_and_sent_again(
    store: Store, client: MetricaClient
) -> None:
    """Issue 16, item 9. A crashed run's same-size intents used to be paired with the uploads
    in start order; retries reorder requests, so that order proves nothing. Two candidates,
    or two intents that could own one, and it is no match: every one of them is sent again."""
    started = datetime.now(UTC) - timedelta(milliseconds=200)
    # The dead run "dead" wrote three intents of 3 records; two uploads of 3 reached Metrica.
    for name in ("a", "b", "c"):
        store.begin_upload(_intent(name, "dead", 3, started), [f"e-{name}"])
        started += timedelta(milliseconds=1)
    await _contacts(client, 3)
    await _contacts(client, 3)
    store.begin_upload(_intent("lonely", "dead", 5, started), ["e-lonely"])  # never arrived
    reconciler = Reconciler(store, client, ZoneInfo("Europe/Moscow"))
    intents = store.inflight(["e-a", "e-b", "e-c", "e-lonely"])
    for event_id in ("e-a", "e-b", "e-c", "e-lonely"):
        assert await reconciler.applied(intents[event_id]) is None, event_id
    # Resolved for good, as not applied: no upload is credited to any of them later.
    after = store.inflight(["e-a", "e-b", "e-c"])
    assert all(i.resolved and i.uploading_id is None for i in after.values())
    assert store.known_uploads(started - timedelta(minutes=1)) == set()


async def test_two_crashed_intents_of_one_size_and_one_upload_match_neither(
    store: Store, client: MetricaClient
) -> None:
    started = datetime.now(UTC) - timedelta(milliseconds=200)
    store.begin_upload(_intent("a", "dead", 2, started), ["e-a"])
    store.begin_upload(_intent("b", "dead", 2, started + timedelta(milliseconds=1)), ["e-b"])
    await _contacts(client, 2)  # a's or b's: nothing tells
    intents = store.inflight(["e-a", "e-b"])
    assert (
        await Reconciler(store, client, ZoneInfo("Europe/Moscow")).applied(intents["e-a"]) is None
    )
    # Not taken by b once a is settled either, by this process or by the next one.
    assert (
        await Reconciler(store, client, ZoneInfo("Europe/Moscow")).applied(intents["e-b"]) is None
    )
    assert (
        await Reconciler(store, client, ZoneInfo("Europe/Moscow")).applied(
            store.inflight(["e-b"])["e-b"]
        )
        is None
    )
    assert store.known_uploads(started - timedelta(minutes=1)) == set()


@pytest.mark.parametrize(
    "listed_as",
    [
        {"uploading_format": "CSV"},  # another integration's CSV upload through the API
        {"uploading_source": "INTERFACE"},  # a file uploaded by hand
        {"entity_type": "CUSTOM_LIST"},  # a custom list, not contacts or orders
        {"entity_type": "ORDER"},  # the older name of the other endpoint
    ],
)
async def test_a_same_size_upload_not_made_like_ours_is_not_credited(
    store: Store,
    client: MetricaClient,
    monkeypatch: pytest.MonkeyPatch,
    listed_as: dict[str, str],
) -> None:
    started = datetime.now(UTC) - timedelta(milliseconds=200)
    store.begin_upload(_intent("lost", "dead", 2, started), ["e-lost"])  # never arrived
    other = await _contacts(client, 2)  # someone else's upload of the same size, same second
    listed = client.last_uploadings

    async def as_listed(**kwargs: Any) -> list[dict[str, Any]]:
        return [
            {**u, **listed_as} if u["uploading_id"] == other else u for u in await listed(**kwargs)
        ]

    monkeypatch.setattr(client, "last_uploadings", as_listed)
    reconciler = Reconciler(store, client, ZoneInfo("Europe/Moscow"))
    assert await reconciler.applied(store.inflight(["e-lost"])["e-lost"]) is None


@pytest.mark.parametrize("answered", [True, False])
async def test_a_live_upload_whose_intent_began_200_s_earlier_is_known(
    store: Store, client: MetricaClient, monkeypatch: pytest.MonkeyPatch, answered: bool
) -> None:
    """A live process's request keeps its intent through its retries (300 s by default, plus
    a 30 s timeout): an intent begun 200 s ago may own an upload listed now. Answered, the
    upload is known; still waiting, it may be theirs. Either way it is not credited to a
    crashed run's intent of the same size."""
    monkeypatch.setattr(reconcile, "SETTLE", timedelta(seconds=0))
    now = datetime.now(UTC)
    store.begin_upload(_intent("theirs", "alive", 2, now - timedelta(seconds=200)), ["e-t"])
    store.begin_upload(_intent("mine", "dead", 2, now - timedelta(milliseconds=200)), ["e-m"])
    theirs = await _contacts(client, 2)  # their last retry, arriving just now
    if answered:
        store.finish_upload("theirs", theirs)
    # The reach by default is Settings' own: a 300 s retry budget plus a 30 s timeout.
    assert Settings.model_fields["retry_budget_s"].default == reconcile.RETRY_BUDGET_S == 300
    assert Settings.model_fields["metrica_timeout_s"].default == reconcile.TIMEOUT_S
    reconciler = Reconciler(store, client, ZoneInfo("Europe/Moscow"))
    assert await reconciler.applied(store.inflight(["e-m"])["e-m"]) is None


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


async def test_an_upload_a_live_runs_unclear_attempt_left_behind_is_never_credited(
    store: Store, client: MetricaClient
) -> None:
    """Found by the chaos reconciler phase: a live process's upload was applied and answered
    503, sent again and acknowledged under a second id; the first id, recorded by nobody, was
    credited to a crashed run's intent of the same size, whose own upload never arrived. An
    intent in doubt stays a claimant of the uploads in its reach even once resolved."""
    started = datetime.now(UTC) - timedelta(milliseconds=200)
    store.begin_upload(_intent("live", "alive", 2, started), ["e-live"])
    store.begin_upload(_intent("dead", "dead", 2, started), ["e-dead"])
    await _contacts(client, 2)  # the live run's first attempt: applied, its answer lost
    store.doubt_upload("live")
    again = await _contacts(client, 2)
    store.finish_upload("live", again)
    reconciler = Reconciler(store, client, ZoneInfo("Europe/Moscow"))
    assert await reconciler.applied(store.inflight(["e-dead"])["e-dead"]) is None
    # The live run's credit stands.
    live = store.inflight(["e-live"])["e-live"]
    assert (live.resolved, live.uploading_id, live.in_doubt) == (True, again, True)
