"""The quota days in the store: one read-decide-write transaction per request, per day."""

from __future__ import annotations

from metrica_bridge.store import Store
from metrica_bridge.store.base import QuotaState
from tests.store.builders import run_together
from tests.store.conftest import StoreFactory


def _take(limit: int) -> object:
    def change(used: int, next_at: float) -> QuotaState | None:
        return (used + 1, next_at + 1.5) if used < limit else None

    return change


def test_quota_state_per_day(store: Store) -> None:
    assert store.quota_state("2024-05-01") == (0, 0.0)
    for _ in range(3):
        store.update_quota("2024-05-01", _take(5))  # type: ignore[arg-type]
    assert store.quota_state("2024-05-01") == (3, 4.5)
    assert store.quota_state("2024-05-02") == (0, 0.0)
    # Nothing returned: nothing written, the state as it was.
    assert store.update_quota("2024-05-01", lambda used, next_at: None) == (3, 4.5)
    assert store.update_quota("2024-05-02", lambda used, next_at: (5000, 0.0)) == (5000, 0.0)
    assert store.quota_state("2024-05-01") == (3, 4.5)


def test_quota_never_exceeds_the_limit_under_concurrency(make_store: StoreFactory) -> None:
    """Every process decides inside the transaction: 800 attempts, exactly 250 granted."""
    stores = [make_store() for _ in range(8)]
    granted = [0] * len(stores)

    def run(i: int) -> None:
        for _ in range(100):
            took: list[int] = []

            def change(used: int, next_at: float, took: list[int] = took) -> QuotaState | None:
                if used >= 250:
                    return None
                took.append(used)
                return (used + 1, next_at)

            stores[i].update_quota("2024-05-01", change)
            granted[i] += len(took)

    run_together(len(stores), run)
    assert sum(granted) == 250
    assert stores[0].quota_state("2024-05-01")[0] == 250
