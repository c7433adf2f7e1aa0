"""Fenced claims (issue 16, item 10): a process whose lease lapsed neither frees the next
owner's claim nor overwrites the order state written under it; and what the store refuses
(issue 16, item 2) is told apart from the store being unreachable."""

from __future__ import annotations

import pytest

from metrica_bridge.store import Changes, OrderState, Store
from metrica_bridge.store.base import ClaimLost, StoreRefused
from tests.store.builders import entry


def test_a_lapsed_owner_cannot_free_the_claim_of_the_next(store: Store) -> None:
    # A claims, A's lease lapses, B claims, A releases: C must not get the deal while B holds it
    a = store.claim_orders(["d1"], "a", lease_s=0)
    assert a == {"d1"}
    b = store.claim_orders(["d1"], "b", lease_s=60)
    assert b == {"d1"}
    store.apply(Changes(release_claims=["d1"], owner="a", epochs=dict(a.epochs)))
    assert store.claim_orders(["d1"], "c", lease_s=60) == set()
    assert store.renew_claims("b", lease_s=60) == 1
    # B's own release works
    store.apply(Changes(release_claims=["d1"], owner="b", epochs=dict(b.epochs)))
    assert store.claim_orders(["d1"], "c", lease_s=60) == {"d1"}


def test_a_lapsed_owner_cannot_overwrite_the_next_owners_order(store: Store) -> None:
    a = store.claim_orders(["d1"], "a", lease_s=0)
    b = store.claim_orders(["d1"], "b", lease_s=60)
    newer = OrderState(deal_id="d1", client_uniq_id="c1", status="won", sent=True)
    store.apply(Changes(ledger=[entry("e-b")], orders=[newer], owner="b", epochs=dict(b.epochs)))
    older = OrderState(deal_id="d1", client_uniq_id="c1", status="new", sent=True)
    stale = Changes(
        ledger=[entry("e-a")],
        orders=[older],
        release_claims=["d1"],
        owner="a",
        epochs=dict(a.epochs),
    )
    with pytest.raises(ClaimLost) as lost:
        store.apply(stale)
    assert lost.value.deals == {"d1"}
    # nothing of the unit of work was written: not the ledger, not the release
    assert store.orders(["d1"]) == {"d1": newer}
    assert set(store.outcomes(["e-a", "e-b"])) == {"e-b"}
    assert store.claim_orders(["d1"], "c", lease_s=60) == set()


def test_the_same_owner_reclaiming_gets_a_new_epoch(store: Store) -> None:
    # the same process holding an older claim of the deal (a stalled worker) is fenced too
    first = store.claim_orders(["d1"], "a", lease_s=0)
    store.apply(Changes(release_claims=["d1"]))  # unfenced, as before
    second = store.claim_orders(["d1", "d2"], "a", lease_s=60)
    assert second == {"d1", "d2"}
    assert second.epochs["d1"] not in (first.epochs["d1"], second.epochs["d2"])
    state = OrderState(deal_id="d1", client_uniq_id="c1", status="new")
    with pytest.raises(ClaimLost):
        store.apply(Changes(orders=[state], owner="a", epochs=dict(first.epochs)))
    store.apply(Changes(orders=[state], owner="a", epochs={"d1": second.epochs["d1"]}))
    assert store.orders(["d1"]) == {"d1": state}


def test_a_lapsed_claim_nobody_took_is_still_good(store: Store) -> None:
    mine = store.claim_orders(["d1"], "a", lease_s=0)  # lapsed at once, nobody took it
    state = OrderState(deal_id="d1", client_uniq_id="c1", status="new")
    store.apply(Changes(orders=[state], release_claims=["d1"], owner="a", epochs=dict(mine.epochs)))
    assert store.orders(["d1"]) == {"d1": state}
    assert store.claim_orders(["d1"], "b", lease_s=60) == {"d1"}


def test_an_unclaimed_order_is_refused_to_a_fenced_writer(store: Store) -> None:
    state = OrderState(deal_id="d9", client_uniq_id="c1")
    with pytest.raises(ClaimLost):
        store.apply(Changes(orders=[state], owner="a"))
    assert store.orders(["d9"]) == {}


def test_text_the_store_cannot_hold_is_refused_not_unavailable(
    store: Store, store_url: str
) -> None:
    bad = Changes(ledger=[entry("e1", "skipped", detail="bad\x00text"), entry("e2")])
    if store_url.startswith("sqlite"):
        store.apply(bad)  # SQLite holds NUL; PostgreSQL's text cannot
        assert set(store.outcomes(["e1", "e2"])) == {"e1", "e2"}
        return
    with pytest.raises(StoreRefused):
        store.apply(bad)
    assert store.outcomes(["e1", "e2"]) == {}
    store.apply(Changes(ledger=[entry("e2")]))
    assert set(store.outcomes(["e2"])) == {"e2"}
