from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from metrica_bridge.store import (
    Changes,
    IdentityUpdate,
    OrderState,
    Store,
    StoreError,
)
from tests.store.builders import entry, parked


def test_a_failing_apply_leaves_nothing_behind(store: Store) -> None:
    store.claim_orders(["d1"], "a", lease_s=60)
    store.merge_identities([IdentityUpdate("c1", client_ids=("1",))])
    store.apply(Changes(park=[parked("p-old", "d1", "c1")]))
    broken = dataclasses.replace(parked("p-new", "d2", "c1"), value=None)  # type: ignore[arg-type]
    changes = Changes(
        ledger=[entry("e1")],
        orders=[OrderState(deal_id="d1", client_uniq_id="c1", revenue=Decimal("1.00"))],
        contacts_uploaded={"c1": "fp"},
        release_claims=["d1"],
        unpark=["p-old"],
        park=[broken],  # violates NOT NULL after everything else was written
    )
    with pytest.raises(StoreError):
        store.apply(changes)
    assert store.outcomes(["e1"]) == {}
    assert store.orders(["d1"]) == {}
    assert store.identities(["c1"])["c1"].uploaded_fingerprint is None
    assert store.claim_orders(["d1"], "b", lease_s=60) == set()  # still held by "a"
    assert store.parked_deals(["d1", "d2"]) == {"d1"}
    assert store.parked_count() == 1
    # and the store still works afterwards
    store.apply(dataclasses.replace(changes, park=[]))
    assert set(store.outcomes(["e1"])) == {"e1"}
    assert store.parked_count() == 0


def test_one_apply_writes_everything(store: Store) -> None:
    store.claim_orders(["d1"], "a", lease_s=60)
    store.apply(
        Changes(
            ledger=[entry("e1"), entry("e2", "parked")],
            orders=[OrderState(deal_id="d1", client_uniq_id="c1", status="new", sent=True)],
            contacts_uploaded={"c1": "fp"},
            release_claims=["d1"],
            park=[parked("e2", "d1", "c2")],
        )
    )
    assert set(store.outcomes(["e1", "e2"])) == {"e1", "e2"}
    assert store.orders(["d1"])["d1"].status == "new"
    assert store.identities(["c1"])["c1"].uploaded_fingerprint == "fp"
    assert store.claim_orders(["d1"], "b", lease_s=60) == {"d1"}
    assert store.parked_deals(["d1"]) == {"d1"}


def test_empty_changes_are_a_no_op(store: Store) -> None:
    store.apply(Changes())
    assert store.parked_count() == 0
