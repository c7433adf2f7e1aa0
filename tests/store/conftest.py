"""One conformance suite for both store backends: every test runs on SQLite and PostgreSQL.

``make_store()`` opens another store object on the same database (its own connection or pool),
which is how several instances of the service meet in production.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from metrica_bridge.store import Store, open_store

StoreFactory = Callable[..., Store]


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"  # an absolute path: sqlite:////tmp/…
    # the shared fixture in tests/conftest.py: a fresh database per test
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def make_store(store_url: str) -> Iterator[StoreFactory]:
    opened: list[Store] = []

    def make(*, migrate: bool = True) -> Store:
        store = open_store(store_url, migrate=migrate)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> Store:
    return make_store()
