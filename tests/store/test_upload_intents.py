"""Upload intents: recorded before a request, resolved after it, forgotten with the outcome."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from metrica_bridge.store import Changes, Store
from metrica_bridge.store.base import UploadIntent, order_intent_key
from tests.store.builders import entry


def _intent(intent_id: str, started: datetime, records: int = 2) -> UploadIntent:
    return UploadIntent(intent_id, "owner-a", "orders", records, started)


def test_intent_round_trip_and_resolution(store: Store) -> None:
    started = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    store.begin_upload(_intent("i1", started), ["e1", "e2"])
    found = store.inflight(["e1", "e2", "e3"])
    assert set(found) == {"e1", "e2"}
    assert found["e1"] == _intent("i1", started)
    store.finish_upload("i1", "u-77")
    assert store.inflight(["e1"])["e1"].uploading_id == "u-77"
    assert store.inflight(["e1"])["e1"].resolved
    assert store.known_uploads(started - timedelta(seconds=1)) == {"u-77"}
    assert store.known_uploads(started + timedelta(seconds=1)) == set()


def test_a_later_intent_replaces_the_earlier_one_for_an_event(store: Store) -> None:
    now = datetime.now(UTC)
    store.begin_upload(_intent("i1", now), ["e1"])
    store.finish_upload("i1", None)  # known not applied (failed), sent again later
    store.begin_upload(_intent("i2", now + timedelta(seconds=1), records=1), ["e1"])
    assert store.inflight(["e1"])["e1"].intent_id == "i2"
    assert not store.inflight(["e1"])["e1"].resolved


def test_an_order_s_key_is_answered_only_while_its_upload_is_unsettled(store: Store) -> None:
    """Events keep their settled intents (a crash between settling and recording is
    recognised by them); an order's key is asked only for an upload nobody settled."""
    now = datetime.now(UTC)
    store.begin_upload(_intent("i1", now), ["e1", order_intent_key("D1")])
    store.begin_upload(_intent("i2", now), ["e2", order_intent_key("D2")])
    store.finish_upload("i1", "u-1")
    found = store.inflight(["e1", "e2", order_intent_key("D1"), order_intent_key("D2")])
    assert set(found) == {"e1", "e2", order_intent_key("D2")}
    assert found[order_intent_key("D2")].intent_id == "i2"


def test_recording_an_outcome_forgets_the_intent(store: Store) -> None:
    now = datetime.now(UTC)
    store.begin_upload(_intent("i1", now), ["e1", "e2"])
    store.apply(Changes(ledger=[entry("e1", "delivered", upload_id="u-1")]))
    assert set(store.inflight(["e1", "e2"])) == {"e2"}


def test_purge_drops_old_intents(store: Store) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    store.begin_upload(_intent("old", old), ["e-old"])
    store.begin_upload(_intent("new", datetime.now(UTC)), ["e-new"])
    store.purge_ledger(datetime.now(UTC) - timedelta(days=30))
    assert set(store.inflight(["e-old", "e-new"])) == {"e-new"}


def test_open_intents_lists_unresolved_ones_in_a_window(store: Store) -> None:
    now = datetime.now(UTC)
    store.begin_upload(_intent("a", now - timedelta(seconds=30)), ["e1"])
    store.begin_upload(_intent("b", now), ["e2"])
    store.begin_upload(_intent("c", now + timedelta(seconds=1)), ["e3"])
    store.finish_upload("c", "u-1")
    found = store.open_intents(now - timedelta(seconds=5), now + timedelta(seconds=5))
    assert [i.intent_id for i in found] == ["b"]
