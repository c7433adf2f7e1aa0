"""PostgreSQL for tests: one pgserver instance per session, one fresh database per test."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql


def start_server() -> Any:
    """A throw-away server (``cleanup_mode="delete"``). As root, pgserver runs postgres as its
    own ``pgserver`` user, so the data directory must sit where that user can reach it:
    a fresh directory under the system temp dir, not pytest's 0700 tmp tree."""
    from pgserver import get_server  # type: ignore[attr-defined]

    base = Path(tempfile.mkdtemp(prefix="metrica-bridge-pg-"))
    base.chmod(0o755)
    return get_server(base / "pgdata", cleanup_mode="delete")


def create_database(server: Any) -> tuple[str, str]:
    """``(name, uri)`` of a new empty database."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, str(server.get_uri(database=name))


def drop_database(server: Any, name: str) -> None:
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        # FORCE: a test may leave a pool open; it must not keep the database alive.
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
