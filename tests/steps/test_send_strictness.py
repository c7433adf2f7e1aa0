"""The service's sender against the answers that cost most (issue 15, item 10): a 200 whose
upload failed validation, 400s that name no rows, ``too_much_rows``, and orders naming products
or goals the counter does not have. Bad records end ``Rejected`` (the DLQ's ``rejected``), the
rest delivered, nothing retried forever; a refusal of everything alike is held, not
dead-lettered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.steps.batch import Ack, Endpoint, Pending, RequestLimits, encode
from metrica_bridge.steps.send import Rejected, Sender, isolation_cap
from metrica_bridge.store.base import Store
from tests.support.stack import COUNTER, TOKEN


@pytest.fixture
async def api(sandbox: SandboxServer) -> AsyncIterator[httpx.AsyncClient]:
    """Plain HTTP to the sandbox's Metrica paths: what a counter's admin sets up by hand."""
    async with httpx.AsyncClient(
        base_url=sandbox.url, headers={"Authorization": f"OAuth {TOKEN}"}, timeout=10
    ) as http:
        yield http


def _pending(record: dict[str, Any], record_id: str) -> Pending:
    return Pending(record_id, record, encode(record), time.monotonic(), [], [f"e-{record_id}"])


def _contacts(n: int, bad: set[int]) -> list[Pending]:
    # A phone without its country code is refused (metrica-api.md §5).
    return [
        _pending({"uniq_id": f"c{i}", "phones": ["12" if i in bad else "79995550000"]}, f"c{i}")
        for i in range(n)
    ]


def _orders(n: int, **special: dict[str, Any]) -> list[Pending]:
    """Orders D0…D{n-1} of contacts c0…; ``special={"3": {...}}`` adds fields to order 3."""
    batch = []
    for i in range(n):
        record: dict[str, Any] = {
            "id": f"D{i}",
            "client_uniq_id": f"c{i}",
            "client_type": "CONTACT",
            "create_date_time": "2025-03-02 11:00:00",
            "order_status": "new",
            "products": {"apple": 1},
            **special.get(str(i), {}),
        }
        batch.append(_pending(record, f"D{i}"))
    return batch


def _sender(client: MetricaClient, store: Store, **kw: Any) -> Sender:
    return Sender(client, store, "test-owner", setup_retry_s=0.05, **kw)


def _rejected(batch: list[Pending]) -> set[int]:
    """Indexes of the records rejected; every other one must be delivered."""
    rejected = {i for i, p in enumerate(batch) if isinstance(p.result, Rejected)}
    acked = {i for i, p in enumerate(batch) if isinstance(p.result, Ack)}
    assert len(rejected) + len(acked) == len(batch), [p.result for p in batch]
    return rejected


async def _seed_contacts(client: MetricaClient, n: int) -> None:
    await client.upload_contacts([{"uniq_id": f"c{i}"} for i in range(n)])


async def test_a_200_with_failed_validation_is_never_delivered_and_the_bad_record_isolated(
    sandbox: SandboxServer, client: MetricaClient, store: Store
) -> None:
    sandbox.set_faults(invalid_as_200=True)
    batch = _contacts(32, bad={19})
    await _sender(client, store)(Endpoint.CONTACTS, batch)

    assert _rejected(batch) == {19}
    reason = batch[19].result
    assert isinstance(reason, Rejected)
    assert "FAILED" in reason.reason
    assert len(sandbox.contacts(COUNTER)) == 31
    uploads = sandbox.uploads(COUNTER)
    failed = [u for u in uploads if u["status"] == "failed"]
    assert failed
    assert all(u["http_status"] == 200 for u in failed)
    # Bisection without row names: log2(32) halvings, the rest in one request, maybe a probe.
    assert len(uploads) <= 1 + 5 + 1 + 1
    # None of the failed uploads is taken for an applied one.
    assert {u["uploading_id"] for u in failed}.isdisjoint(
        {p.result.uploading_id for p in batch if isinstance(p.result, Ack)}
    )


async def test_a_200_failed_for_every_record_alike_is_held_not_dead_lettered(
    sandbox: SandboxServer, client: MetricaClient, store: Store
) -> None:
    sandbox.set_faults(invalid_as_200=True)
    await _seed_contacts(client, 6)
    holds: list[str | None] = []
    batch = _orders(6, **{str(i): {"order_status": "never-mapped"} for i in range(6)})
    task = asyncio.create_task(_sender(client, store, on_setup_error=holds.append)(
        Endpoint.ORDERS, batch
    ))  # fmt: skip
    await asyncio.sleep(0.5)
    assert not task.done()
    assert not any(isinstance(p.result, Rejected) for p in batch)
    assert holds
    assert holds[0] is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_400_naming_no_rows_isolates_the_bad_orders_within_the_cap(
    sandbox: SandboxServer, client: MetricaClient, store: Store, api: httpx.AsyncClient
) -> None:
    sandbox.set_faults(error_locations=False)
    listed = {"attributes": [], "items": [{"name": "apple"}, {"name": "pear"}]}
    assert (
        await api.post(f"/cdp/api/v1/counter/{COUNTER}/schema/products", json=listed)
    ).is_success
    await _seed_contacts(client, 40)
    batch = _orders(40, **{"7": {"products": {"kiwi": 2}}, "30": {"products": {"pear": 1}}})
    await _sender(client, store)(Endpoint.ORDERS, batch)

    assert _rejected(batch) == {7}  # pear is listed: order 30 is fine
    assert len(sandbox.orders(COUNTER)) == 39
    requests = len([u for u in sandbox.uploads(COUNTER) if u["endpoint"] == "orders"])
    assert requests <= 1 + isolation_cap(40)


async def test_orders_naming_an_unlisted_product_are_rejected_by_name(
    sandbox: SandboxServer, client: MetricaClient, store: Store, api: httpx.AsyncClient
) -> None:
    listed = {"attributes": [], "items": [{"name": "apple", "humanized": "Яблоко"}]}
    assert (
        await api.post(f"/cdp/api/v1/counter/{COUNTER}/schema/products", json=listed)
    ).is_success
    await _seed_contacts(client, 10)
    batch = _orders(10, **{"2": {"products": {"apple": 1, "kiwi": 1}}, "8": {"products": {"x": 1}}})
    await _sender(client, store)(Endpoint.ORDERS, batch)

    assert _rejected(batch) == {2, 8}
    assert sorted(o["id"] for o in sandbox.orders(COUNTER)) == sorted(
        f"D{i}" for i in range(10) if i not in (2, 8)
    )
    # The rows were named: the refused request and the one carrying the rest.
    assert len([u for u in sandbox.uploads(COUNTER) if u["endpoint"] == "orders"]) == 2


async def test_orders_naming_a_goal_the_counter_lacks_are_rejected(
    sandbox: SandboxServer, client: MetricaClient, store: Store, api: httpx.AsyncClient
) -> None:
    goal = {"goal": {"name": "Good lead", "type": "action",
                     "conditions": [{"type": "exact", "url": "good_lead"}]}}  # fmt: skip
    assert (await api.post(f"/management/v1/counter/{COUNTER}/goals", json=goal)).is_success
    await _seed_contacts(client, 5)
    batch = _orders(
        5,
        **{
            "1": {"goals": [{"goal_action_id": "good_lead", "price": 10}]},
            "3": {"goals": [{"goal_action_id": "no_such_goal"}]},
        },
    )
    await _sender(client, store)(Endpoint.ORDERS, batch)

    assert _rejected(batch) == {3}
    [with_goal] = [o for o in sandbox.orders(COUNTER) if o["id"] == "D1"]
    assert with_goal["goals"] == [{"goal_action_id": "good_lead", "price": 10}]


async def test_too_much_rows_is_split_then_a_failed_part_isolated(
    sandbox: SandboxServer, client: MetricaClient, store: Store
) -> None:
    sandbox.set_faults(max_request_rows=25, invalid_as_200=True)
    limits = RequestLimits(records=10_000, bytes=10_000_000)
    batch = _contacts(100, bad={64})
    await _sender(client, store, limits=limits)(Endpoint.CONTACTS, batch)

    assert _rejected(batch) == {64}
    assert len(sandbox.contacts(COUNTER)) == 99
    assert limits.records <= 25
