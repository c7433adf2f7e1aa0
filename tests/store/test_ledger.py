from __future__ import annotations

from datetime import UTC, datetime, timedelta

from metrica_bridge.store import Changes, Store
from tests.store.builders import entry


def test_first_outcome_wins(store: Store) -> None:
    store.apply(Changes(ledger=[entry("e1", "parked", detail="no identity")]))
    store.apply(Changes(ledger=[entry("e1", "delivered", upload_id="u-9"), entry("e2", "stale")]))
    found = store.outcomes(["e1", "e2", "e3"])
    assert set(found) == {"e1", "e2"}
    assert found["e1"].outcome == "parked"
    assert found["e1"].detail == "no identity"
    assert found["e1"].upload_id is None
    assert found["e2"].outcome == "stale"


def test_first_outcome_wins_within_one_batch(store: Store) -> None:
    store.apply(Changes(ledger=[entry("e1", "delivered"), entry("e1", "dead_lettered")]))
    assert store.outcomes(["e1"])["e1"].outcome == "delivered"


def test_recorded_at_is_set_and_returned_as_utc(store: Store) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    given = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    store.apply(Changes(ledger=[entry("auto"), entry("given", recorded_at=given)]))
    found = store.outcomes(["auto", "given"])
    auto = found["auto"].recorded_at
    assert auto is not None
    assert auto.utcoffset() == timedelta(0)
    assert before <= auto <= datetime.now(UTC) + timedelta(seconds=5)
    assert found["given"].recorded_at == given


def test_lookups_in_bulk(store: Store) -> None:
    ids = [f"evt-{i:05d}" for i in range(2500)]
    store.apply(Changes(ledger=[entry(eid, upload_id=f"u{i % 7}") for i, eid in enumerate(ids)]))
    asked = ids[::2] + [f"missing-{i}" for i in range(600)]
    found = store.outcomes(asked)
    assert set(found) == set(ids[::2])
    assert found["evt-00014"].upload_id == "u0"
    assert store.outcomes([]) == {}


def test_purge_removes_only_older_entries(store: Store) -> None:
    old = datetime(2024, 1, 1, tzinfo=UTC)
    store.apply(
        Changes(
            ledger=[
                entry("old-1", recorded_at=old),
                entry("old-2", recorded_at=old + timedelta(days=1)),
                entry("new", recorded_at=old + timedelta(days=10)),
            ]
        )
    )
    assert store.purge_ledger(old + timedelta(days=2)) == 2
    assert set(store.outcomes(["old-1", "old-2", "new"])) == {"new"}
    assert store.purge_ledger(old + timedelta(days=2)) == 0


def test_a_dead_lettered_outcome_gives_way_to_a_replay(store: Store) -> None:
    store.apply(Changes(ledger=[entry("e1", "dead_lettered", detail="retry_exhausted")]))
    store.apply(Changes(ledger=[entry("e1", "delivered", upload_id="u-1")]))
    store.apply(Changes(ledger=[entry("e1", "stale")]))  # settled now: first outcome wins again
    assert store.outcomes(["e1"])["e1"].outcome == "delivered"
    # ...and within one batch the same rule holds.
    store.apply(Changes(ledger=[entry("e2", "dead_lettered"), entry("e2", "delivered")]))
    assert store.outcomes(["e2"])["e2"].outcome == "delivered"
    # A replay that fails again, for another reason: the latest class holds.
    store.apply(Changes(ledger=[entry("e3", "dead_lettered", detail="retry_exhausted")]))
    store.apply(Changes(ledger=[entry("e3", "dead_lettered", detail="unattributable")]))
    assert store.outcomes(["e3"])["e3"].detail == "unattributable"
