"""The PostgreSQL fixtures: one server per session, a fresh database per test."""

from __future__ import annotations

import psycopg
import pytest


@pytest.mark.postgres
def test_each_test_gets_an_empty_database(postgres_url: str, postgres_server_url: str) -> None:
    assert postgres_url.startswith("postgresql://")
    assert postgres_url != postgres_server_url
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")


@pytest.mark.postgres
def test_databases_do_not_leak_between_tests(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        found = conn.execute("SELECT to_regclass('public.t')").fetchone()
    assert found == (None,)
