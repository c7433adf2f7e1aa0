from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta

from metrica_bridge.store import Changes, IdentityUpdate, Store
from metrica_bridge.store.base import WAITS_CREATION, OrderState
from tests.store.builders import T0, parked, run_together
from tests.store.conftest import StoreFactory

TOPICS = ["deal-status-changed", "payment-received"]
LONG_AGO = T0 - timedelta(days=365)  # nothing is that old: no event expires


def test_park_round_trip_and_parked_deals(store: Store) -> None:
    event = parked("e1", "d1", "c1", version=4)
    store.apply(Changes(park=[event, parked("e2", "d2", "c2")]))
    store.apply(Changes(park=[parked("e1", "d9", "c9")]))  # same event again: the first stays
    assert store.parked_count() == 2
    assert store.parked_deals(["d1", "d2", "d3", "d9"]) == {"d1", "d2"}
    store.merge_identities([IdentityUpdate("c1", client_ids=("1",))])
    taken = store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 10)
    assert taken == [event]
    assert taken[0].occurred_at.utcoffset() == timedelta(0)
    assert taken[0].parked_at.utcoffset() == timedelta(0)


def test_key_may_be_missing(store: Store) -> None:
    event = dataclasses.replace(parked("e1", "d1", "c1"), key=None)
    store.apply(Changes(park=[event]))
    taken = store.take_ready_parked(TOPICS, "w", 60, T0 + timedelta(seconds=1), 10)
    assert taken == [event]


def test_events_wait_for_an_identifier(store: Store) -> None:
    store.apply(
        Changes(
            park=[
                parked("e1", "d1", "c1"),
                parked("e2", "d2", "c2"),
                parked("e3", "d3", "c3"),
            ]
        )
    )
    store.merge_identities(
        [
            IdentityUpdate("c1", phones=("79990000001",), consent=False),  # unusable
            IdentityUpdate("c2", emails=("a@example.com",)),
        ]
    )
    assert [e.event_id for e in store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 10)] == ["e2"]
    store.merge_identities([IdentityUpdate("c1", client_ids=("123",))])
    assert [e.event_id for e in store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 10)] == ["e1"]
    assert store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 10) == []


def test_events_parked_too_long_come_out_without_identity(store: Store) -> None:
    store.apply(
        Changes(
            park=[
                parked("old", "d1", "c1", parked_at=T0 - timedelta(hours=2)),
                parked("young", "d2", "c2", parked_at=T0),
            ]
        )
    )
    taken = store.take_ready_parked(TOPICS, "w", 60, T0 - timedelta(hours=1), 10)
    assert [e.event_id for e in taken] == ["old"]


def test_order_topics_and_limit(store: Store) -> None:
    events = [
        parked("b-late", "b", "c1", at_s=10, offset=5),
        parked("b-v2", "b", "c1", at_s=5, version=2, topic="payment-received"),
        parked("b-v1", "b", "c1", at_s=5, version=1),
        parked("b-nov", "b", "c1", at_s=5),
        parked("a-1", "a", "c1", at_s=50),
        parked("lead", "a", "c1", topic="lead-created"),
    ]
    store.apply(Changes(park=events))
    store.merge_identities([IdentityUpdate("c1", client_ids=("1",))])
    first = store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 3)
    assert [e.event_id for e in first] == ["a-1", "b-nov", "b-v1"]
    # The rest of deal b waits while its first events are in flight, then follows them.
    assert store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 10) == []
    store.apply(Changes(unpark=["b-nov", "b-v1"]))
    rest = store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 10)
    assert [e.event_id for e in rest] == ["b-v2", "b-late"]
    assert store.take_ready_parked(["lead-created"], "w", 60, LONG_AGO, 0) == []
    assert store.take_ready_parked([], "w", 60, LONG_AGO, 10) == []


def test_leases_expire_and_unpark_removes(store: Store) -> None:
    store.apply(Changes(park=[parked("e1", "d1", "c1"), parked("e2", "d1", "c1", at_s=1)]))
    store.merge_identities([IdentityUpdate("c1", client_ids=("1",))])
    assert len(store.take_ready_parked(TOPICS, "crashed", 0, LONG_AGO, 10)) == 2
    # the lease ran out (its holder died): someone else takes the events over
    taken = store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 10)
    assert [e.event_id for e in taken] == ["e1", "e2"]
    assert store.take_ready_parked(TOPICS, "x", 60, LONG_AGO, 10) == []
    store.apply(Changes(unpark=["e1"]))
    assert store.parked_count() == 1
    assert store.parked_deals(["d1"]) == {"d1"}
    store.apply(Changes(unpark=["e2"]))
    assert store.parked_count() == 0
    assert store.parked_deals(["d1"]) == set()


def test_unlease_puts_a_taken_event_back_for_the_next_sweep(store: Store) -> None:
    store.apply(Changes(park=[parked("e1", "d1", "c1")]))
    store.merge_identities([IdentityUpdate("c1", client_ids=("1",))])
    assert [e.event_id for e in store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 10)] == ["e1"]
    store.renew_claims("w", 60)  # the heartbeat keeps it leased while it is handled
    assert store.take_ready_parked(TOPICS, "x", 60, LONG_AGO, 10) == []
    # taken, then not handled (the identity went away meanwhile): back in the park, lease over
    store.apply(Changes(unlease=["e1"]))
    store.renew_claims("w", 60)
    assert store.parked_count() == 1
    assert [e.event_id for e in store.take_ready_parked(TOPICS, "x", 60, LONG_AGO, 10)] == ["e1"]


def test_concurrent_takers_never_share_an_event(make_store: StoreFactory) -> None:
    seed = make_store()
    seed.apply(
        Changes(park=[parked(f"e{i:03d}", f"d{i % 17}", f"c{i % 3}", at_s=i) for i in range(150)])
    )
    seed.merge_identities([IdentityUpdate(f"c{k}", client_ids=(str(k),)) for k in range(3)])
    stores = [make_store() for _ in range(4)]
    taken: dict[int, list[str]] = {}
    # (deal, event) in the order taken, across takers: appended before the taker lets go.
    sequence: list[tuple[str, str]] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        mine: list[str] = []
        while batch := stores[i].take_ready_parked(TOPICS, f"w{i}", 60, LONG_AGO, 7):
            mine += [e.event_id for e in batch]
            with lock:
                sequence.extend((e.deal_id or "", e.event_id) for e in batch)
            stores[i].apply(Changes(unpark=[e.event_id for e in batch]))  # handled
        taken[i] = mine

    run_together(len(stores), run)
    everything = [eid for mine in taken.values() for eid in mine]
    assert len(taken) == len(stores)
    assert sorted(everything) == [f"e{i:03d}" for i in range(150)]
    # No deal's events were in two takers' hands at once, so each deal left the park in order
    # (issue 16, item 13: two processes raced one deal's payments to Metrica).
    by_deal: dict[str, list[str]] = {}
    for deal, event_id in sequence:
        by_deal.setdefault(deal, []).append(event_id)
    assert all(events == sorted(events) for events in by_deal.values()), by_deal


def test_a_creation_wait_is_ready_once_a_parked_event_of_its_deal_names_the_time(
    store: Store,
) -> None:
    """Issue 16, item 13: the payment waiting for its deal's creation time leaves first, with
    the time the later event behind it names, instead of that event leaving alone ahead of it."""
    first = parked("p1", "d1", "c1", topic="payment-received", waits_for=WAITS_CREATION)
    behind = parked("p2", "d1", "c1", topic="payment-received", at_s=5, deal_created_at=T0)
    store.apply(Changes(park=[first]))
    store.merge_identities([IdentityUpdate("c1", client_ids=("1",))])
    assert store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 10) == []
    store.apply(Changes(park=[behind]))
    taken = store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 10)
    assert [(e.event_id, e.deal_created_at) for e in taken] == [("p1", T0), ("p2", T0)]


def test_nothing_of_a_deal_leaves_ahead_of_an_event_that_must_still_wait(store: Store) -> None:
    waiting = parked("p1", "d1", "c1", topic="payment-received", waits_for=WAITS_CREATION)
    # Ready on its own (its client is known), but later in the deal than the waiting payment;
    # another deal's event goes on.
    store.apply(Changes(park=[waiting, parked("s2", "d1", "c1", at_s=5), parked("x", "d2", "c1")]))
    store.merge_identities([IdentityUpdate("c1", client_ids=("1",))])
    assert [e.event_id for e in store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 10)] == ["x"]
    store.apply(Changes(orders=[OrderState("d1", "c1", created_at=T0)]))
    taken = store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 10)
    assert [e.event_id for e in taken] == ["p1", "s2"]


def test_a_deal_with_an_event_in_flight_is_left_to_wait(store: Store) -> None:
    store.apply(Changes(park=[parked("e1", "d1", "c1"), parked("e2", "d1", "c1", at_s=1)]))
    store.merge_identities([IdentityUpdate("c1", client_ids=("1",))])
    assert [e.event_id for e in store.take_ready_parked(TOPICS, "a", 60, LONG_AGO, 1)] == ["e1"]
    # e2 is ready too, but another process taking it would race e1 to the order.
    assert store.take_ready_parked(TOPICS, "b", 60, LONG_AGO, 10) == []
    store.apply(Changes(unpark=["e1"]))
    assert [e.event_id for e in store.take_ready_parked(TOPICS, "b", 60, LONG_AGO, 10)] == ["e2"]


def test_a_payment_waiting_for_its_creation_time_moves_when_the_order_has_one(
    store: Store,
) -> None:
    waiting = dataclasses.replace(parked("p1", "d1", "c1"), waits_for=WAITS_CREATION)
    store.apply(Changes(park=[waiting]))
    # The client has an identifier, but what the payment waits for is the deal's creation time.
    store.merge_identities([IdentityUpdate("c1", client_ids=("1",))])
    assert store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 10) == []
    store.apply(Changes(orders=[OrderState("d1", "c1")]))  # an order without one: still waits
    assert store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 10) == []
    store.apply(Changes(orders=[OrderState("d1", "c1", created_at=T0)]))
    assert store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 10) == [waiting]


def test_creation_waits_have_their_own_time(store: Store) -> None:
    old = T0 - timedelta(hours=2)
    waiting = dataclasses.replace(parked("p1", "d1", "c1", parked_at=old), waits_for=WAITS_CREATION)
    store.apply(Changes(park=[waiting, parked("s1", "d2", "c2", parked_at=old)]))
    store.merge_identities([IdentityUpdate("c1", client_ids=("1",))])  # c2 has none
    hour_ago = T0 - timedelta(hours=1)
    # Identity waits expired an hour ago; creation waits not for a day.
    taken = store.take_ready_parked(TOPICS, "w", 60, hour_ago, 10, T0 - timedelta(days=1))
    assert [e.event_id for e in taken] == ["s1"]
    taken = store.take_ready_parked(TOPICS, "x", 60, LONG_AGO, 10, hour_ago)
    assert [(e.event_id, e.waits_for) for e in taken] == [("p1", WAITS_CREATION)]


def test_a_creation_wait_whose_client_has_no_identifier_ends_like_an_identity_wait(
    store: Store,
) -> None:
    """Its client lost every identifier (consent withdrawn, no ClientID) while it waited: the
    order's creation time alone does not make it ready (the engine would park it again at every
    sweep); the identity wait's expiry ends it, as unattributable."""
    old = T0 - timedelta(hours=2)
    waiting = dataclasses.replace(parked("p1", "d1", "c1", parked_at=old), waits_for=WAITS_CREATION)
    store.apply(Changes(park=[waiting], orders=[OrderState("d1", "c1", created_at=T0)]))
    assert store.take_ready_parked(TOPICS, "w", 60, LONG_AGO, 10, LONG_AGO) == []
    taken = store.take_ready_parked(TOPICS, "w", 60, T0 - timedelta(hours=1), 10, LONG_AGO)
    assert [e.event_id for e in taken] == ["p1"]
