"""The recorder against what the store refuses (issue 16, items 2 and 10), in-process: real
SQLite store behind a thin wrapper that injects the failure, the sandbox over HTTP, the DLQ on
the embedded broker.

* a round whose data the store refuses (PostgreSQL refuses a NUL in text, say) is written event
  by event: the event it refuses is dead-lettered ``invalid_event``, the others recorded — the
  recorder never loops on it, holding every topic of the process;
* a process whose claim of a deal was lost (its lease lapsed, another process took the deal and
  wrote a newer state) writes nothing of that event: it decides again, from the newer state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.store import Changes, OrderState, Store, open_store
from metrica_bridge.store import base as store_base
from tests.support import crm
from tests.support.engine import CODEC, Engine, running_engine
from tests.support.kafka import TopicFactory, consume_all

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
# what PostgreSQL answers for a NUL in text (StoreError before issue 16: retried forever)
REFUSED = getattr(store_base, "StoreRefused", store_base.StoreError)


class Injecting:
    """The real store; ``before_apply`` sees every unit of work first (and may raise)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.before_apply: Callable[[Changes], None] = lambda changes: None

    def apply(self, changes: Changes) -> None:
        self.before_apply(changes)
        self.store.apply(changes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture
async def engine(
    bootstrap: str, topics: TopicFactory, sandbox: SandboxServer, tmp_path: Path
) -> AsyncIterator[Engine]:
    async with running_engine(bootstrap, topics, sandbox, tmp_path, wrap=Injecting) as engine:
        yield engine


def _lead(n: int) -> bytes:
    record = {
        "event_id": f"lead-{n}",
        "occurred_at": T0,
        "lead_id": f"L{n}",
        "deal_id": None,
        "client": {"uniq_id": "C1", "name": None, "phones": [], "emails": []},
        "metrica_client_id": str(10**18 + n),
        "yclid": None,
        "utm": None,
        "consent": True,
    }
    return CODEC.encode(crm.LEAD, record)


def _status(event_id: str, deal: str, version: int) -> bytes:
    record: dict[str, Any] = {
        "event_id": event_id,
        "occurred_at": T0 + timedelta(minutes=version),
        "deal_id": deal,
        "client_uniq_id": "C1",
        "deal_created_at": T0 - timedelta(minutes=5),
        "status": "won",
        "revenue": Decimal("500.00"),
        "cost": None,
        "currency": None,
        "products": [],
        "version": version,
    }
    return CODEC.encode(crm.DEAL, record)


async def test_an_outcome_the_store_refuses_is_dead_lettered_alone(
    engine: Engine, bootstrap: str
) -> None:
    def refuse_bad_order(changes: Changes) -> None:
        if any(order.deal_id == "DBAD" for order in changes.orders):
            raise REFUSED(
                "store apply failed: CharacterNotInRepertoire [22021] invalid byte sequence"
                ' for encoding "UTF8": 0x00'
            )

    engine.store.before_apply = refuse_bad_order
    engine.feed("lead-created", "L1", _lead(1))
    await engine.settle(1)
    engine.feed("deal-status-changed", "D1", _status("s-1", "D1", 1))
    engine.feed("deal-status-changed", "DBAD", _status("s-bad", "DBAD", 1))
    engine.feed("deal-status-changed", "D2", _status("s-2", "D2", 1))
    await engine.settle(4)
    ledger = engine.ledger()
    assert ledger["s-1"][0] == "delivered"
    assert ledger["s-2"][0] == "delivered"
    assert ledger["s-bad"][:2] == ("dead_lettered", "invalid_event")
    # its order state is not what the store holds; the claim was released all the same
    assert set(engine.store.orders(["D1", "DBAD", "D2"])) == {"D1", "D2"}
    assert engine.store.claim_orders(["D1", "DBAD", "D2"], "probe", 60) == {"D1", "DBAD", "D2"}
    [dead] = consume_all(bootstrap, f"{engine.topics['deal-status-changed']}.dlq", 1)
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["dlq.error.class"] == "invalid_event"
    assert "refuses" in headers["dlq.error.message"]
    # the partition went on: every offset completed once
    assert sorted((w.source.topic, w.source.offset) for w in engine.done) == sorted(
        (topic, o) for topic, n in engine.offsets.items() for o in range(n)
    )


async def test_a_process_that_lost_its_claim_decides_again(engine: Engine) -> None:
    other = open_store(f"sqlite:///{engine.db}")
    newer = OrderState(
        deal_id="D1",
        client_uniq_id="C1",
        created_at=T0 - timedelta(minutes=5),
        applied_at=T0 + timedelta(days=1),
        applied_version=99,
        status="won",
        revenue=Decimal("900.00"),
        deal_amount=Decimal("900.00"),
        sent=True,
    )
    stolen: list[int] = []

    def lapse_and_take(changes: Changes) -> None:
        # our worker stalled past its lease: another process takes D1 and writes a newer state
        if stolen or not any(o.deal_id == "D1" for o in changes.orders):
            return
        with sqlite3.connect(engine.db) as conn:
            conn.execute("UPDATE order_claims SET expires_at = 0 WHERE deal_id = 'D1'")
        claims = other.claim_orders(["D1"], "other", 60)
        assert claims == {"D1"}
        fence: dict[str, Any] = {"owner": "other", "epochs": dict(getattr(claims, "epochs", {}))}
        if not hasattr(Changes(), "owner"):  # before fencing existed
            fence = {}
        other.apply(Changes(orders=[newer], release_claims=["D1"], **fence))
        stolen.append(1)

    engine.store.before_apply = lapse_and_take
    try:
        engine.feed("lead-created", "L1", _lead(1))
        await engine.settle(1)
        engine.feed("deal-status-changed", "D1", _status("s-1", "D1", 1))
        await engine.settle(2)
        assert stolen
        # the newer state stands; our event, decided again against it, is stale
        assert engine.store.orders(["D1"]) == {"D1": newer}
        assert engine.ledger()["s-1"][0] == "stale"
        assert engine.store.claim_orders(["D1"], "probe", 60) == {"D1"}  # nothing left held
    finally:
        other.close()
