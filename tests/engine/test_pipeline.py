"""The engine in-process: real SQLite store, the sandbox over HTTP, the DLQ on the embedded
broker. Everything handed to it in one go goes through in rounds and ends with exactly one
outcome per event; one deal's updates never overlap, even when a lead that opens the deal and
the deal's own events are in the same round."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from metrica_bridge.engine.parking import ParkSweeper
from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.metrics import REGISTRY
from metrica_bridge.outcomes import ErrorClass, Outcome
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.steps import enrich
from metrica_bridge.steps.batch import Endpoint, Pending, SendFn
from metrica_bridge.store import open_store
from metrica_bridge.store.base import Changes, IdentityUpdate, LedgerEntry, Store
from tests.support import crm
from tests.support.engine import CODEC, OWNER, Engine, running_engine
from tests.support.kafka import TopicFactory, consume_all
from tests.support.stack import COUNTER, TOKEN

PAYMENT = "crm.events.PaymentReceived"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


@pytest.fixture
async def engine(
    bootstrap: str, topics: TopicFactory, sandbox: SandboxServer, tmp_path: Path
) -> AsyncIterator[Engine]:
    async with running_engine(bootstrap, topics, sandbox, tmp_path, linger_s=0.05) as engine:
        yield engine


def _lead(n: int, deal: str | None, *, client: str = "C1", at: datetime = T0) -> bytes:
    record = {
        "event_id": f"lead-{n}",
        "occurred_at": at,
        "lead_id": f"L{n}",
        "deal_id": deal,
        "client": {"uniq_id": client, "name": None, "phones": [], "emails": []},
        "metrica_client_id": str(10**18 + n),
        "yclid": None,
        "utm": None,
        "consent": True,
    }
    return CODEC.encode(crm.LEAD, record)


def _status(n: int, deal: str, status: str, version: int, *, client: str = "C1") -> bytes:
    record: dict[str, Any] = {
        "event_id": f"status-{n}",
        "occurred_at": T0 + timedelta(minutes=version),
        "deal_id": deal,
        "client_uniq_id": client,
        "deal_created_at": T0 - timedelta(minutes=5),  # not the lead's time: immutable in Metrica
        "status": status,
        "revenue": Decimal("500.00") if status == "won" else None,
        "cost": None,
        "currency": None,
        "products": [],
        "version": version,
    }
    return CODEC.encode(crm.DEAL, record)


def _payment(
    n: int,
    deal: str,
    *,
    client: str = "C1",
    currency: str = "RUB",
    created: datetime | None = None,
    amount: str = "500.00",
) -> bytes:
    record = {
        "event_id": f"payment-{n}",
        "occurred_at": T0 + timedelta(minutes=30 + n),
        "payment_id": f"P{n}",
        "deal_id": deal,
        "client_uniq_id": client,
        "amount": Decimal(amount),
        "currency": currency,
        "deal_created_at": created,
    }
    return CODEC.encode(PAYMENT, record)


async def test_everything_in_one_round_ends_once_and_in_order(
    engine: Engine, sandbox: SandboxServer, bootstrap: str
) -> None:
    # The lead opening D1, D1's own status changes and its payment, a second lead of the same
    # client, a CRM retry of the first status change and a poison record: all at once.
    engine.feed("lead-created", "L1", _lead(1, "D1"))
    engine.feed("deal-status-changed", "D1", _status(1, "D1", "qualified", 1))
    engine.feed("deal-status-changed", "D1", _status(2, "D1", "won", 2))
    engine.feed("deal-status-changed", "D1", _status(1, "D1", "qualified", 1))  # the retry
    engine.feed("payment-received", "D1", _payment(1, "D1"))
    engine.feed("lead-created", "L2", _lead(2, None))
    engine.feed("deal-status-changed", "D9", b"\x00 not avro")
    await engine.settle(7)

    ledger = engine.ledger()
    assert {k: v[0] for k, v in ledger.items()} == {
        "lead-1": "delivered",
        "status-1": "delivered",
        "status-2": "delivered",
        "payment-1": "skipped",  # won with the deal amount already: nothing new for Metrica
        "lead-2": "delivered",
        f"@{engine.topics['deal-status-changed']}:0:3": "dead_lettered",
    }
    [order] = sandbox.orders(COUNTER)
    assert [h["order_status"] for h in order["history"]] == ["new", "qualified", "won"]
    # One upload per update of D1: they never overlapped, each delivered by its own upload.
    uploads = {v[2] for k, v in ledger.items() if k.startswith("status") or k == "lead-1"}
    assert len(uploads) == 3
    # The order was created by the lead: its creation time is the lead's, and stays so.
    assert order["create_date_time"] == T0.astimezone(engine.pipeline.zone).strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    [contact] = sandbox.contacts(COUNTER)
    assert sorted(contact["client_ids"]) == [str(10**18 + 1), str(10**18 + 2)]
    dlq = consume_all(bootstrap, f"{engine.topics['deal-status-changed']}.dlq", 1)
    assert [m.value for m in dlq] == [b"\x00 not avro"]
    # Every offset completed, each once.
    assert sorted((w.source.topic, w.source.offset) for w in engine.done) == sorted(
        (topic, o) for topic, n in engine.offsets.items() for o in range(n)
    )


async def test_replay_of_an_event_parked_here_and_finished_elsewhere(
    engine: Engine, sandbox: SandboxServer
) -> None:
    """Found by the long chaos run: this process parks an event and remembers it parked; another
    process's sweeper releases it and dead-letters it (retry_exhausted). The replay of that dead
    letter comes back here: it must be handled, not dropped as a copy of a parked event."""
    engine.feed("deal-status-changed", "D2", _status(7, "D2", "won", 1, client="C2"))
    await engine.settle(1)
    assert not engine.ledger()  # parked: no identity for C2 yet
    # The other process, through its own store on the same database: released it, gave up on
    # Metrica, dead-lettered it.
    other = open_store(f"sqlite:///{engine.db}")
    try:
        other.apply(
            Changes(
                ledger=[
                    LedgerEntry(
                        "status-7",
                        engine.topics["deal-status-changed"],
                        Outcome.DEAD_LETTERED,
                        ErrorClass.RETRY_EXHAUSTED,
                    )
                ],
                unpark=["status-7"],
            )
        )
    finally:
        other.close()
    engine.feed("lead-created", "L2", _lead(2, None, client="C2"))
    await engine.settle(2)
    replayed = (("dlq.replay.count", b"1"), ("dlq.error.class", b"retry_exhausted"))
    engine.feed(
        "deal-status-changed", "D2", _status(7, "D2", "won", 1, client="C2"), headers=replayed
    )
    await engine.settle(3)

    assert engine.ledger()["status-7"][0] == "delivered"
    [order] = sandbox.orders(COUNTER)
    assert order["order_status"] == "won"


def _metrica_time(engine: Engine, at: datetime) -> str:
    return at.astimezone(engine.pipeline.zone).strftime("%Y-%m-%d %H:%M:%S")


async def test_a_payment_waits_in_the_park_for_the_deals_creation_time(
    engine: Engine, sandbox: SandboxServer
) -> None:
    """Issue 15, item 2: the payment's time is never the order's permanent creation time while
    the deal's own may still come."""
    sweeper = ParkSweeper(
        engine.pipeline.intake, engine.store, engine.topics.values(), owner=OWNER, max_wait_s=600
    )
    engine.feed("lead-created", "L1", _lead(1, None))  # the client is known; the deal is not
    engine.feed("payment-received", "D1", _payment(1, "D1"))
    await engine.settle(2)
    with sqlite3.connect(engine.db) as conn:
        parked = conn.execute("SELECT event_id, waits_for FROM parked").fetchall()
    assert parked == [("payment-1", "creation")]
    assert sandbox.orders(COUNTER) == []
    assert await sweeper.sweep() == 0  # nothing it waits for has come
    engine.feed("deal-status-changed", "D1", _status(1, "D1", "qualified", 1))
    await engine.settle(3)
    # The status parks behind the deal's parked payment, to keep the deal's order; the creation
    # time it names makes the payment ready too, and both leave in the deal's order.
    assert await sweeper.sweep() == 2
    await engine.ends("status-1", "delivered")
    await engine.ends("payment-1", "delivered")
    [order] = sandbox.orders(COUNTER)
    assert order["create_date_time"] == _metrica_time(engine, T0 - timedelta(minutes=5))
    paid = engine.pipeline.statuses.paid.id
    assert [h["order_status"] for h in order["history"]] == ["qualified", paid]
    assert order["revenue"] == 500


async def test_a_later_payment_never_reaches_metrica_before_the_one_waiting_for_creation(
    engine: Engine, sandbox: SandboxServer
) -> None:
    """Issue 16, item 13: the first payment waits for the deal's creation time, the second
    (which names it) parks behind it. It used to leave the park first, as it waited for nothing,
    and Metrica showed the second payment alone as the deal's revenue; now the first payment
    takes the creation time the second one names, and they go in the deal's order."""
    created = T0 - timedelta(minutes=5)
    sweeper = ParkSweeper(
        engine.pipeline.intake, engine.store, engine.topics.values(), owner=OWNER, max_wait_s=600
    )
    engine.feed("lead-created", "L1", _lead(1, None))
    engine.feed("payment-received", "D1", _payment(1, "D1", amount="100.00"))
    engine.feed("payment-received", "D1", _payment(2, "D1", amount="250.00", created=created))
    await engine.settle(3)
    with sqlite3.connect(engine.db) as conn:
        parked = conn.execute("SELECT event_id, waits_for FROM parked ORDER BY 1").fetchall()
    assert parked == [("payment-1", "creation"), ("payment-2", "identity")]
    assert await sweeper.sweep() == 2
    await engine.ends("payment-1", "delivered")
    await engine.ends("payment-2", "delivered")
    [order] = sandbox.orders(COUNTER)
    assert [h["revenue"] for h in order["history"]] == [100, 350]
    assert order["create_date_time"] == _metrica_time(engine, created)


async def test_a_payment_that_waited_its_whole_time_creates_the_order_by_rule(
    engine: Engine, sandbox: SandboxServer
) -> None:
    before = REGISTRY.get_sample_value(
        "metrica_bridge_order_rules_total", {"rule": "created_at_from_payment"}
    )
    sweeper = ParkSweeper(
        engine.pipeline.intake,
        engine.store,
        engine.topics.values(),
        owner=OWNER,
        max_wait_s=600,
        creation_max_wait_s=0,
    )
    engine.feed("lead-created", "L1", _lead(1, None))
    engine.feed("payment-received", "D1", _payment(1, "D1"))
    await engine.settle(2)
    assert await sweeper.sweep() == 1
    await engine.ends("payment-1", "delivered")
    [order] = sandbox.orders(COUNTER)
    assert order["create_date_time"] == _metrica_time(engine, T0 + timedelta(minutes=31))
    after = REGISTRY.get_sample_value(
        "metrica_bridge_order_rules_total", {"rule": "created_at_from_payment"}
    )
    assert (after or 0) - (before or 0) == 1


async def test_a_payment_in_another_currency_is_dead_lettered_alone(
    engine: Engine, sandbox: SandboxServer, bootstrap: str
) -> None:
    created = T0 - timedelta(minutes=5)
    engine.feed("lead-created", "L1", _lead(1, None))
    engine.feed("payment-received", "D1", _payment(1, "D1", created=created))
    await engine.settle(2)
    engine.feed("payment-received", "D1", _payment(2, "D1", currency="USD", created=created))
    engine.feed("payment-received", "D1", _payment(3, "D1", created=created))
    await engine.settle(4)
    ledger = engine.ledger()
    assert ledger["payment-2"][:2] == ("dead_lettered", "invalid_event")
    assert ledger["payment-3"][0] == "delivered"  # the one behind it went on
    [order] = sandbox.orders(COUNTER)
    assert (order["revenue"], order["currency"]) == (1000, "RUB")
    [dead] = consume_all(bootstrap, f"{engine.topics['payment-received']}.dlq", 1)
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["dlq.error.class"] == "invalid_event"
    assert headers["dlq.error.message"] == "payment in USD for an order in RUB"


async def test_a_deal_moved_to_another_client_is_relinked_after_its_contact(
    engine: Engine, sandbox: SandboxServer
) -> None:
    engine.feed("lead-created", "L1", _lead(1, "D1"))
    engine.feed("lead-created", "L2", _lead(2, None, client="C2"))
    await engine.settle(2)
    before = len(sandbox.uploads(COUNTER))
    engine.feed("deal-status-changed", "D1", _status(1, "D1", "new", 1, client="C2"))
    await engine.settle(3)
    assert engine.ledger()["status-1"][0] == "delivered"
    [order] = sandbox.orders(COUNTER)
    assert order["client_uniq_id"] == "C2"
    assert {c["uniq_id"] for c in sandbox.contacts(COUNTER)} == {"C1", "C2"}
    # The new client's contact was in Metrica before the order named it.
    later = [u["endpoint"] for u in sandbox.uploads(COUNTER)[before:]]
    assert later[-1] == "orders"


async def test_a_record_too_large_for_the_dlq_goes_as_a_stub_and_the_partition_moves_on(
    engine: Engine, sandbox: SandboxServer, bootstrap: str
) -> None:
    """Issue 16, item 5: 2 MB of garbage fails MSG_SIZE_TOO_LARGE every time it is produced
    whole; it goes headers-only, saying so, and the record behind it is handled."""
    engine.feed("deal-status-changed", "D9", b"\x00" * 2_000_000)
    engine.feed("lead-created", "L1", _lead(1, "D1"))
    engine.feed("deal-status-changed", "D1", _status(1, "D1", "won", 1))
    await engine.settle(3)
    ledger = engine.ledger()
    assert ledger[f"@{engine.topics['deal-status-changed']}:0:0"][:2] == (
        "dead_lettered",
        "decode_error",
    )
    assert ledger["status-1"][0] == "delivered"
    [dead] = consume_all(bootstrap, f"{engine.topics['deal-status-changed']}.dlq", 1)
    headers = {k: v.decode() for k, v in dead.headers}
    assert dead.value is None
    assert headers["dlq.value.dropped"] == str(2_000_000 + 2)  # the value and the key "D9"
    assert headers["dlq.original.offset"] == "0"
    assert "too large for the DLQ" in headers["dlq.error.message"]


async def test_a_contact_that_grew_while_it_was_uploaded_is_sent_again(
    bootstrap: str, topics: TopicFactory, sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Issue 16, item 13: two processes handle two leads of one client. The other merges its
    ClientID and uploads the whole contact while ours (rendered before that merge) is on its
    way; ours lands last and, under UPDATE, replaces the client_ids list with the smaller one.
    Played deterministically: the other process acts just before our contact upload."""
    theirs = str(10**18 + 99)
    raced: list[bool] = []

    def racing(send: SendFn, store: Store) -> SendFn:
        async def racing_send(endpoint: Endpoint, batch: list[Pending]) -> None:
            if endpoint is Endpoint.CONTACTS and not raced:
                raced.append(True)
                merged = store.merge_identities([IdentityUpdate("C1", client_ids=(theirs,))])
                rendered, _, _ = enrich.contact(merged["C1"], False, ZoneInfo("Europe/Moscow"))
                async with MetricaClient(
                    api_url=sandbox.url, counter_id=COUNTER, token=SecretStr(TOKEN)
                ) as other:
                    await other.upload_contacts([rendered])
            await send(endpoint, batch)

        return racing_send

    async with running_engine(bootstrap, topics, sandbox, tmp_path, wrap_send=racing) as engine:
        engine.feed("lead-created", "L1", _lead(1, None))
        await engine.settle(1)
        assert engine.ledger()["lead-1"][0] == "delivered"
    assert raced
    [contact] = sandbox.contacts(COUNTER)
    assert sorted(contact["client_ids"]) == sorted([str(10**18 + 1), theirs])
