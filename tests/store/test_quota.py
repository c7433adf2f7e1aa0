from __future__ import annotations

from metrica_bridge.store import Store
from tests.store.builders import run_together
from tests.store.conftest import StoreFactory


def test_quota_counts_per_day(store: Store) -> None:
    assert store.quota_used("2024-05-01") == 0
    assert store.take_quota("2024-05-01", limit=5, n=3)
    assert not store.take_quota("2024-05-01", limit=5, n=3)
    assert store.take_quota("2024-05-01", limit=5, n=2)
    assert not store.take_quota("2024-05-01", limit=5)
    assert not store.take_quota("2024-05-02", limit=5, n=6)
    assert store.take_quota("2024-05-02", limit=5)
    assert store.quota_used("2024-05-01") == 5
    assert store.quota_used("2024-05-02") == 1


def test_quota_never_exceeds_the_limit_under_concurrency(make_store: StoreFactory) -> None:
    stores = [make_store() for _ in range(8)]
    granted = [0] * len(stores)

    def run(i: int) -> None:
        for _ in range(100):
            if stores[i].take_quota("2024-05-01", limit=250):
                granted[i] += 1

    run_together(len(stores), run)
    assert sum(granted) == 250
    assert stores[0].quota_used("2024-05-01") == 250
