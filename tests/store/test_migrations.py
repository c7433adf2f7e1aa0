from __future__ import annotations

from pathlib import Path

import pytest

from metrica_bridge.config import ConfigError
from metrica_bridge.store import Changes, StoreError, open_store, redact_url, sqlite_path
from metrica_bridge.store.postgres import PostgresStore
from metrica_bridge.store.schema import migrations
from tests.store.builders import entry, run_together
from tests.store.conftest import StoreFactory

LATEST = max(version for version, _, _ in migrations("sqlite"))


def test_migrations_are_versioned_alike_on_both_backends() -> None:
    sqlite = [(v, name) for v, name, _ in migrations("sqlite")]
    postgres = [(v, name) for v, name, _ in migrations("postgres")]
    assert sqlite == postgres
    assert sqlite[0] == (1, "0001_init.sql")


def test_migrate_is_idempotent_and_keeps_data(make_store: StoreFactory) -> None:
    store = make_store()
    store.apply(Changes(ledger=[entry("e1")]))
    assert store.migrate() == LATEST
    assert store.migrate() == LATEST
    assert make_store().migrate() == LATEST  # another instance starting later
    assert set(store.outcomes(["e1"])) == {"e1"}


def test_concurrent_migrations_apply_once(make_store: StoreFactory) -> None:
    stores = [make_store(migrate=False) for _ in range(4)]
    results: list[int] = []
    run_together(len(stores), lambda i: results.append(stores[i].migrate()))
    assert results == [LATEST] * len(stores)
    stores[0].apply(Changes(ledger=[entry("e1")]))
    assert set(stores[3].outcomes(["e1"])) == {"e1"}


def test_ping_and_close(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.ping()
    store.close()
    assert not store.ping()
    with pytest.raises(StoreError):
        store.outcomes(["e1"])


def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sqlite_path("sqlite:///state/bridge.db") == "state/bridge.db"
    assert sqlite_path("sqlite:////var/lib/bridge.db") == "/var/lib/bridge.db"
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///relative.db")
    try:
        assert store.ping()
    finally:
        store.close()
    assert (tmp_path / "relative.db").exists()
    for bad in ("sqlite://", "sqlite:///", "sqlite://:memory:", "sqlite:///:memory:"):
        with pytest.raises(ConfigError):
            sqlite_path(bad)


def test_unknown_scheme_is_a_config_error_without_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        open_store("mysql://bridge:hunter2secret@db.example/bridge")
    assert "hunter2secret" not in str(info.value)
    assert "mysql://bridge:***@db.example/bridge" in str(info.value)
    with pytest.raises(ConfigError):
        open_store("state.db")


def test_redact_url() -> None:
    assert redact_url("postgresql://u:pw@h:5432/db?sslmode=require") == (
        "postgresql://u:***@h:5432/db?sslmode=require"
    )
    assert redact_url("postgres://u@h/db?password=pw&x=1") == "postgres://u@h/db?password=***&x=1"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("sqlite:////var/lib/bridge.db") == "sqlite:////var/lib/bridge.db"


def test_unreachable_postgres_is_a_store_error_without_the_password() -> None:
    with pytest.raises(StoreError) as info:
        PostgresStore(
            "postgresql://bridge:hunter2secret@127.0.0.1:1/bridge?connect_timeout=1",
            connect_timeout_s=0.5,
            display_url=redact_url("postgresql://bridge:hunter2secret@127.0.0.1:1/bridge"),
        )
    assert "hunter2secret" not in str(info.value)
    assert "***" in str(info.value)
