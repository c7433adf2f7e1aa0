"""Issue 16, item 12: the embedded store commits with ``synchronous=FULL``: with WAL and NORMAL
a power loss may drop commits whose Kafka offsets were already committed (their events then
have no outcome anywhere)."""

from __future__ import annotations

from pathlib import Path

from metrica_bridge.store.sqlite import SqliteStore

FULL = 2


def test_the_sqlite_store_syncs_every_commit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    try:
        with store._read("pragma") as conn:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == FULL
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()
