"""Issue 16, item 11: the store failing to resolve the upload intent after Metrica accepted a
batch does not make its events retry (the open intent is this process's own: they would be
sent again). The bookkeeping is retried in place, then the batch is settled."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.steps import send
from metrica_bridge.steps.batch import Ack, Endpoint, Pending, encode
from metrica_bridge.steps.send import Sender
from metrica_bridge.store.base import Store, StoreError, order_intent_key
from tests.support import crm
from tests.support.stack import COUNTER


class FinishFails:
    """The real store; ``finish_upload`` fails its first ``times`` calls."""

    def __init__(self, store: Store, times: int) -> None:
        self._store = store
        self.left = times

    def finish_upload(self, intent_id: str, uploading_id: str | None) -> None:
        if self.left > 0:
            self.left -= 1
            raise StoreError("store finish_upload failed: OperationalError: database is locked")
        self._store.finish_upload(intent_id, uploading_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _contacts(n: int) -> list[Pending]:
    batch = []
    for i in range(n):
        record: dict[str, Any] = {"uniq_id": f"c{i}", "phones": ["79995550000"]}
        batch.append(Pending(f"c{i}", record, encode(record), time.monotonic(), [], [f"e{i}"]))
    return batch


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(send, "FINISH_RETRY_S", (0.01, 0.01, 0.01), raising=False)


async def test_a_failed_resolution_after_metrica_accepted_is_retried_in_place(
    sandbox: SandboxServer, client: MetricaClient, store: Store
) -> None:
    flaky = FinishFails(store, times=2)
    batch = _contacts(3)
    await Sender(client, flaky, "test-owner")(Endpoint.CONTACTS, batch)  # type: ignore[arg-type]
    assert all(isinstance(p.result, Ack) for p in batch)
    assert len(sandbox.uploads(COUNTER)) == 1  # sent once
    intents = store.inflight(["e0", "e1", "e2"])
    assert {i.resolved for i in intents.values()} == {True}
    [ack] = {p.result for p in batch}
    assert isinstance(ack, Ack)
    assert {i.uploading_id for i in intents.values()} == {ack.uploading_id}


async def test_accepted_is_settled_even_when_the_store_stays_down(
    sandbox: SandboxServer, client: MetricaClient, store: Store
) -> None:
    flaky = FinishFails(store, times=100)
    batch = _contacts(2)
    await Sender(client, flaky, "test-owner")(Endpoint.CONTACTS, batch)  # type: ignore[arg-type]
    # the events are delivered (the ledger will say so), not retried: never sent twice
    assert all(isinstance(p.result, Ack) for p in batch)
    assert len(sandbox.uploads(COUNTER)) == 1


async def test_an_order_upload_is_recorded_under_each_order_too(
    sandbox: SandboxServer, client: MetricaClient, store: Store
) -> None:
    """Another process about to update the order finds this upload while it is unsettled
    (engine/round_read.py ``unsettled``), not only the events it carries."""
    crm.push_status_map(sandbox.url)
    sender = Sender(client, store, "test-owner")
    contact = _contacts(1)
    await sender(Endpoint.CONTACTS, contact)
    record: dict[str, Any] = {
        "id": "D1",
        "client_uniq_id": "c0",
        "client_type": "CONTACT",
        "order_status": "new",
        "create_date_time": "2026-06-01 10:00:00",
    }
    order = Pending("D1", record, encode(record), time.monotonic(), [], ["s1"])
    sandbox.set_faults(latency_ms=1_000)  # the upload stays unsettled while we look
    sending = asyncio.create_task(sender(Endpoint.ORDERS, [order]))
    keys = ["s1", order_intent_key("D1")]
    for _ in range(250):  # the intent is written right before the request leaves
        if len(intents := store.inflight(keys)) == 2:
            break
        await asyncio.sleep(0.02)
    assert intents["s1"] == intents[order_intent_key("D1")]
    assert intents["s1"].endpoint == "orders"
    await sending
    assert isinstance(order.result, Ack)
    # Settled: the order's key is no longer an open question; the event keeps its intent.
    assert set(store.inflight(keys)) == {"s1"}


async def test_an_attempt_answered_503_after_it_applied_leaves_the_intent_in_doubt(
    sandbox: SandboxServer, client: MetricaClient, store: Store
) -> None:
    sandbox.set_faults(apply_then_fail_rate=1.0)
    batch = _contacts(1)
    with contextlib.suppress(Exception):
        await Sender(client, store, "test-owner")(Endpoint.CONTACTS, batch)
    sandbox.set_faults(apply_then_fail_rate=0.0)
    [intent] = store.inflight(["e0"]).values()
    assert intent.in_doubt
    assert len(sandbox.uploads(COUNTER)) >= 2  # applied every time, answered 503
