from __future__ import annotations

import multiprocessing
import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from metrica_bridge.store import Changes, OrderState, Store
from tests.store.builders import run_together
from tests.store.conftest import StoreFactory
from tests.store.workers import claim_in_process

MSK = timezone(timedelta(hours=3))


def test_order_round_trip_is_exact(store: Store) -> None:
    order = OrderState(
        deal_id="d1",
        client_uniq_id="c1",
        created_at=datetime(2024, 5, 1, 15, 0, 0, 250000, tzinfo=MSK),
        applied_at=datetime(2024, 5, 2, 9, 30, tzinfo=UTC),
        applied_version=7,
        status="won",
        revenue=Decimal("9999999999999999.99"),
        cost=Decimal("0.10"),
        currency="RUB",
        deal_amount=Decimal("1500.50"),
        payments={"p1": Decimal("1000.25"), "p2": Decimal("500.25")},
        sent=True,
    )
    bare = OrderState(deal_id="d2", client_uniq_id="c2")
    store.apply(Changes(orders=[order, bare]))
    found = store.orders(["d1", "d2", "d3"])
    assert found == {"d1": order, "d2": bare}
    d1 = found["d1"]
    assert d1.created_at == datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
    assert d1.created_at is not None
    assert d1.created_at.utcoffset() == timedelta(0)
    assert str(d1.payments["p1"]) == "1000.25"
    assert sum(d1.payments.values()) == Decimal("1500.50")


def test_orders_are_upserted_whole(store: Store) -> None:
    first = OrderState(
        deal_id="d1",
        client_uniq_id="c1",
        status="new",
        revenue=Decimal("10.00"),
        payments={"p1": Decimal("10.00")},
        sent=True,
    )
    store.apply(Changes(orders=[first]))
    second = OrderState(deal_id="d1", client_uniq_id="c1", status="lost")
    store.apply(Changes(orders=[second]))
    assert store.orders(["d1"]) == {"d1": second}
    # two states of one order in one batch: the later one is what Metrica holds
    third = OrderState(deal_id="d1", client_uniq_id="c1", status="won", sent=True)
    store.apply(Changes(orders=[first, third]))
    assert store.orders(["d1"])["d1"] == third


def test_claims_are_exclusive_even_for_the_same_owner(store: Store) -> None:
    assert store.claim_orders(["d1", "d2", "d2"], "a", lease_s=60) == {"d1", "d2"}
    assert store.claim_orders(["d2", "d3"], "b", lease_s=60) == {"d3"}
    assert store.claim_orders(["d1"], "a", lease_s=60) == set()
    assert store.claim_orders([], "a", lease_s=60) == set()


def test_expired_claims_can_be_taken(store: Store) -> None:
    assert store.claim_orders(["d1"], "a", lease_s=0) == {"d1"}
    assert store.claim_orders(["d1"], "b", lease_s=60) == {"d1"}
    assert store.claim_orders(["d1"], "a", lease_s=60) == set()


def test_renew_moves_the_expiry_of_live_claims_only(store: Store) -> None:
    assert store.claim_orders(["d1", "d2"], "a", lease_s=60) == {"d1", "d2"}
    assert store.claim_orders(["d3"], "a", lease_s=0) == {"d3"}  # already expired
    assert store.claim_orders(["d4"], "b", lease_s=60) == {"d4"}
    assert store.renew_claims("a", lease_s=60) == 2  # d3 is not brought back
    assert store.claim_orders(["d1", "d2", "d3", "d4"], "c", lease_s=60) == {"d3"}
    # the heartbeat sets the expiry to now + lease: a zero lease ends a's claims at once
    assert store.renew_claims("a", lease_s=0) == 2
    assert store.claim_orders(["d1", "d2", "d4"], "c", lease_s=60) == {"d1", "d2"}
    assert store.renew_claims("a", lease_s=60) == 0


def test_release_through_apply(store: Store) -> None:
    assert store.claim_orders(["d1", "d2"], "a", lease_s=60) == {"d1", "d2"}
    store.apply(Changes(release_claims=["d1"]))
    assert store.claim_orders(["d1", "d2"], "b", lease_s=60) == {"d1"}
    assert store.renew_claims("a", lease_s=60) == 1


def test_racing_threads_each_deal_won_once(make_store: StoreFactory) -> None:
    deals = [f"d{i}" for i in range(200)]
    stores = [make_store() for _ in range(6)]
    won: dict[int, set[str]] = {}

    def run(i: int) -> None:
        mine = deals[:]
        random.Random(i).shuffle(mine)
        won[i] = set()
        for start in range(0, len(mine), 25):
            won[i] |= stores[i].claim_orders(mine[start : start + 25], f"owner-{i}", lease_s=60)

    run_together(len(stores), run)
    assert len(won) == len(stores)
    assert sum(len(w) for w in won.values()) == len(deals)
    assert set().union(*won.values()) == set(deals)


def test_racing_processes_each_deal_won_once(store_url: str, store: Store) -> None:
    ctx = multiprocessing.get_context("spawn")
    deals = [f"d{i}" for i in range(100)]
    ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=claim_in_process,
            args=(store_url, f"proc-{i}", deals[:: 1 if i == 0 else -1], ready, go, out),
        )
        for i in range(2)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        assert ready.acquire(timeout=60)
    go.set()
    results = dict(out.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    a, b = (set(results[f"proc-{i}"]) for i in range(2))
    assert a.isdisjoint(b)
    assert a | b == set(deals)
