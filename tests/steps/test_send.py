"""Sending a batch against the sandbox: what a refusal costs in requests (a 400 must not spend
the day), splitting requests refused as too large, and holding for setup problems."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.steps.batch import Ack, Endpoint, Pending, RequestLimits, encode
from metrica_bridge.steps.send import Rejected, Sender, isolation_cap
from metrica_bridge.store.base import Store
from tests.support.stack import COUNTER


class Holds:
    def __init__(self) -> None:
        self.reasons: list[str | None] = []

    def __call__(self, reason: str | None) -> None:
        self.reasons.append(reason)


def _contacts(n: int, bad: set[int] = frozenset()) -> list[Pending]:  # type: ignore[assignment]
    batch = []
    for i in range(n):
        # A phone without its country code is refused by the sandbox (metrica-api.md §5).
        record: dict[str, Any] = {
            "uniq_id": f"c{i}",
            "phones": ["12" if i in bad else "79995550000"],
        }
        batch.append(Pending(f"c{i}", record, encode(record), time.monotonic(), [], [f"e{i}"]))
    return batch


def _requests(sandbox: SandboxServer) -> int:
    return len(sandbox.uploads(COUNTER))


def _sender(client: MetricaClient, store: Store, holds: Holds | None = None, **kw: Any) -> Sender:
    return Sender(
        client, store, "test-owner", setup_retry_s=0.05, on_setup_error=holds or Holds(), **kw
    )


async def test_one_bad_record_without_a_location_costs_about_log2_n(
    sandbox: SandboxServer, client: MetricaClient, store: Store
) -> None:
    sandbox.set_faults(error_locations=False)
    batch = _contacts(64, bad={37})
    await _sender(client, store)(Endpoint.CONTACTS, batch)
    assert isinstance(batch[37].result, Rejected)
    assert all(isinstance(p.result, Ack) for i, p in enumerate(batch) if i != 37)
    # The batch, log2(64) = 6 halvings, then everything kept aside in one request (plus at
    # most one probe of a single record): never the 2·log2(n) of sending both halves.
    assert _requests(sandbox) <= 1 + 6 + 1 + 1
    assert len(sandbox.contacts(COUNTER)) == 63


async def test_rows_metrica_names_cost_one_more_request(
    sandbox: SandboxServer, client: MetricaClient, store: Store
) -> None:
    batch = _contacts(50, bad={3, 41})
    await _sender(client, store)(Endpoint.CONTACTS, batch)
    assert [i for i, p in enumerate(batch) if isinstance(p.result, Rejected)] == [3, 41]
    assert _requests(sandbox) == 2


async def test_scattered_bad_records_are_all_isolated_within_the_cap(
    sandbox: SandboxServer, client: MetricaClient, store: Store
) -> None:
    sandbox.set_faults(error_locations=False)
    batch = _contacts(200, bad={5, 120, 199})
    await _sender(client, store)(Endpoint.CONTACTS, batch)
    rejected = {i for i, p in enumerate(batch) if isinstance(p.result, Rejected)}
    assert rejected == {5, 120, 199}
    assert _requests(sandbox) <= 1 + isolation_cap(200) + 3
    assert len(sandbox.contacts(COUNTER)) == 197


async def test_every_part_refused_alike_is_a_setup_hold_not_dead_letters(
    sandbox: SandboxServer, client: MetricaClient, store: Store
) -> None:
    """Nothing rejected, readiness says why, and once the cause is fixed the probe delivers."""
    sandbox.set_faults(error_locations=False)
    holds = Holds()
    sender = _sender(client, store, holds)
    batch = _contacts(256, bad=set(range(256)))
    task = asyncio.create_task(sender(Endpoint.CONTACTS, batch))
    # The isolation takes a dozen requests; wait for the hold itself, not for a guessed time.
    for _ in range(200):
        if holds.reasons:
            break
        await asyncio.sleep(0.05)
    assert not task.done()
    assert not any(isinstance(p.result, Rejected) for p in batch)
    assert holds.reasons
    assert holds.reasons[0]
    assert "every part" in holds.reasons[0]
    spent = _requests(sandbox)
    assert spent <= 1 + math.ceil(math.log2(256)) + 2 + 3  # the isolation, then a few probes
    # The cause goes away (here: the records are fixed in place, as a pushed status map would).
    for pending in batch:
        pending.encoded = encode({"uniq_id": pending.record_id, "phones": ["79995550000"]})
    await asyncio.wait_for(task, 10)
    assert all(isinstance(p.result, Ack) for p in batch)
    assert holds.reasons[-1] is None


async def test_every_record_named_with_one_message_is_a_setup_hold(
    sandbox: SandboxServer, client: MetricaClient, store: Store
) -> None:
    """Orders whose status the counter does not know (the map never pushed): every row named,
    all refused the same way. A setup problem: held, not dead-lettered."""
    await client.upload_contacts([{"uniq_id": f"c{i}"} for i in range(5)])
    holds = Holds()
    orders = []
    for i in range(5):
        record = {
            "id": f"D{i}",
            "client_uniq_id": f"c{i}",
            "client_type": "CONTACT",
            "create_date_time": "2025-03-02 11:00:00",
            "order_status": "never-mapped",
        }
        orders.append(Pending(f"D{i}", record, encode(record), time.monotonic(), [], [f"o{i}"]))
    task = asyncio.create_task(_sender(client, store, holds)(Endpoint.ORDERS, orders))
    await asyncio.sleep(0.4)
    assert not task.done()
    assert not any(isinstance(p.result, Rejected) for p in orders)
    assert holds.reasons[0] is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert holds.reasons[-1] is None  # nothing held once the batch is gone


async def test_a_request_refused_as_too_large_is_split_and_the_limit_learned(
    sandbox: SandboxServer, client: MetricaClient, store: Store
) -> None:
    sandbox.set_faults(max_request_rows=40)
    limits = RequestLimits(records=10_000, bytes=10_000_000)
    sender = _sender(client, store, limits=limits)
    batch = _contacts(150)
    await sender(Endpoint.CONTACTS, batch)
    assert all(isinstance(p.result, Ack) for p in batch)
    assert len(sandbox.contacts(COUNTER)) == 150
    assert limits.records <= 40  # learned: the next batches are cut to fit
    before = _requests(sandbox)
    await sender(Endpoint.CONTACTS, _contacts(30))
    assert _requests(sandbox) == before + 1


async def test_a_proxy_413_is_split_too(
    sandbox: SandboxServer, client: MetricaClient, store: Store
) -> None:
    sandbox.set_faults(max_request_bytes=3_000)
    limits = RequestLimits(records=10_000, bytes=10_000_000)
    batch = _contacts(100)  # about 5 KB
    await _sender(client, store, limits=limits)(Endpoint.CONTACTS, batch)
    assert all(isinstance(p.result, Ack) for p in batch)
    assert limits.bytes <= 3_000


async def test_one_record_too_large_alone_is_rejected_not_retried(
    sandbox: SandboxServer, client: MetricaClient, store: Store
) -> None:
    sandbox.set_faults(max_request_bytes=2_000)
    record = {"uniq_id": "huge", "name": "x" * 5_000}
    batch = [Pending("huge", record, encode(record), time.monotonic(), [], ["e"])]
    await _sender(client, store)(Endpoint.CONTACTS, batch)
    assert isinstance(batch[0].result, Rejected)
