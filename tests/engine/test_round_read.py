"""The round's read against a real SQLite store: which orders a crashed run left unsettled."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from metrica_bridge.engine.round_read import merge_identities_and_claim
from metrica_bridge.engine.work import Work
from metrica_bridge.events import PaymentReceived
from metrica_bridge.kafka.record import SourceRecord
from metrica_bridge.steps.dedupe import Dedupe
from metrica_bridge.store import IdentityUpdate, Store, open_store
from metrica_bridge.store.base import Changes, UploadIntent, order_intent_key

NOW = datetime.now(UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    store.merge_identities([IdentityUpdate("C1", client_ids=("1234567890",))])
    yield store
    store.close()


def _payment_work() -> Work:
    event = PaymentReceived(
        event_id="payment-1",
        occurred_at=NOW - timedelta(minutes=1),
        payment_id="P1",
        deal_id="D1",
        client_uniq_id="C1",
        amount=Decimal("10.00"),
        currency="RUB",
        deal_created_at=NOW - timedelta(days=1),
    )
    return Work(SourceRecord("payments", 0, 1, b"D1", b"", (), None), "deal:D1", event)


def _read(store: Store, since: datetime | None) -> dict[str, str]:
    state = merge_identities_and_claim(
        store, Dedupe(store), [_payment_work()], {}, ["payment-1"], owner="me",
        unsettled_since=since,
    )  # fmt: skip
    assert state.claimed == {"D1"}
    store.apply(Changes(release_claims=["D1"], owner="me", epochs=state.epochs))
    return state.unsettled


def test_a_crashed_runs_open_upload_of_the_order_is_found_until_it_settles(store: Store) -> None:
    intent = UploadIntent("i-1", "crashed", "orders", 1, NOW - timedelta(seconds=10))
    store.begin_upload(intent, ["status-1", order_intent_key("D1")])
    assert _read(store, NOW - timedelta(minutes=5)) == {"D1": "i-1"}
    # Older than the wait: its event was handled, or never will be; nobody waits for it.
    assert _read(store, NOW) == {}
    # Without a reconciler nothing is looked up.
    assert _read(store, None) == {}
    store.finish_upload("i-1", "42")
    assert _read(store, NOW - timedelta(minutes=5)) == {}


def test_this_processes_own_open_upload_is_not_waited_for(store: Store) -> None:
    intent = UploadIntent("i-2", "me", "orders", 1, NOW - timedelta(seconds=10))
    store.begin_upload(intent, ["status-1", order_intent_key("D1")])
    assert _read(store, NOW - timedelta(minutes=5)) == {}
