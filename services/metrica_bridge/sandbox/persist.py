"""Optional SQLite file behind the in-memory store, so a sandbox keeps its data across restarts.

Records are kept as JSON documents: the sandbox never queries inside them, it loads everything
back on start. Writes are one transaction per accepted or rejected upload.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contacts (
    counter_id INTEGER NOT NULL, uniq_id TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (counter_id, uniq_id));
CREATE TABLE IF NOT EXISTS orders (
    counter_id INTEGER NOT NULL, order_id TEXT NOT NULL, doc TEXT NOT NULL, first_paid_at TEXT,
    PRIMARY KEY (counter_id, order_id));
CREATE TABLE IF NOT EXISTS order_history (
    seq INTEGER PRIMARY KEY, counter_id INTEGER NOT NULL, order_id TEXT NOT NULL,
    order_status TEXT NOT NULL, uploading_id TEXT NOT NULL, received_at TEXT NOT NULL,
    entry TEXT);
CREATE TABLE IF NOT EXISTS order_statuses (
    counter_id INTEGER NOT NULL, status_id TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (counter_id, status_id));
CREATE TABLE IF NOT EXISTS uploads (uploading_id INTEGER PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS catalog (
    counter_id INTEGER NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (counter_id, kind, key));
"""

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class SqliteState:
    def __init__(self, path: str | Path) -> None:
        # Used only from the server's event-loop thread, but that thread is not the creator's.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # A state file from before the history kept whole entries (issue 16) gains the column.
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(order_history)")}
        if "entry" not in columns:
            self._db.execute("ALTER TABLE order_history ADD COLUMN entry TEXT")

    def close(self) -> None:
        self._db.close()

    # -- reads (on start) ------------------------------------------------------------------

    def last_uploading_id(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'last_uploading_id'").fetchone()
        top = self._db.execute("SELECT max(uploading_id) FROM uploads").fetchone()
        return max(int(row[0]) if row else 0, int(top[0] or 0))

    def contacts(self) -> Iterator[tuple[int, str, dict[str, Any]]]:
        for cid, uniq_id, doc in self._db.execute(
            "SELECT counter_id, uniq_id, doc FROM contacts ORDER BY rowid"
        ):
            yield cid, uniq_id, json.loads(doc)

    def orders(self) -> Iterator[tuple[int, str, dict[str, Any], str | None]]:
        for cid, order_id, doc, first_paid_at in self._db.execute(
            "SELECT counter_id, order_id, doc, first_paid_at FROM orders ORDER BY rowid"
        ):
            yield cid, order_id, json.loads(doc), first_paid_at

    def history(self) -> Iterator[tuple[int, str, dict[str, Any]]]:
        for cid, order_id, status, uploading_id, received_at, entry in self._db.execute(
            "SELECT counter_id, order_id, order_status, uploading_id, received_at, entry "
            "FROM order_history ORDER BY seq"
        ):
            yield (
                cid,
                order_id,
                {
                    **(json.loads(entry) if entry else {}),
                    "order_status": status,
                    "uploading_id": uploading_id,
                    "received_at": received_at,
                },
            )

    def statuses(self) -> Iterator[tuple[int, str, dict[str, Any]]]:
        for cid, status_id, doc in self._db.execute(
            "SELECT counter_id, status_id, doc FROM order_statuses ORDER BY rowid"
        ):
            yield cid, status_id, json.loads(doc)

    def catalog(self) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
        """Product list items (``product``, by name) and goals (``goal``, by id)."""
        for cid, kind, key, doc in self._db.execute(
            "SELECT counter_id, kind, key, doc FROM catalog ORDER BY rowid"
        ):
            yield cid, kind, key, json.loads(doc)

    def uploads(self) -> Iterator[dict[str, Any]]:
        for (doc,) in self._db.execute("SELECT doc FROM uploads ORDER BY uploading_id"):
            record: dict[str, Any] = json.loads(doc)
            yield record

    # -- writes ----------------------------------------------------------------------------

    def save(
        self,
        upload: dict[str, Any],
        contacts: Sequence[tuple[int, str, dict[str, Any]]] = (),
        orders: Sequence[tuple[int, str, dict[str, Any], str | None]] = (),
        history: Sequence[tuple[int, str, dict[str, Any]]] = (),
    ) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            # UPSERT keeps the rowid, so records load back in first-upload order.
            db.executemany(
                "INSERT INTO contacts VALUES (?, ?, ?) ON CONFLICT (counter_id, uniq_id) "
                "DO UPDATE SET doc = excluded.doc",
                [(cid, key, _dumps(doc)) for cid, key, doc in contacts],
            )
            db.executemany(
                "INSERT INTO orders VALUES (?, ?, ?, ?) ON CONFLICT (counter_id, order_id) "
                "DO UPDATE SET doc = excluded.doc, first_paid_at = excluded.first_paid_at",
                [(cid, key, _dumps(doc), paid) for cid, key, doc, paid in orders],
            )
            db.executemany(
                "INSERT INTO order_history "
                "(counter_id, order_id, order_status, uploading_id, received_at, entry) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (cid, key, e["order_status"], e["uploading_id"], e["received_at"], _dumps(e))
                    for cid, key, e in history
                ],
            )
            db.execute(
                "INSERT OR REPLACE INTO uploads VALUES (?, ?)",
                (int(upload["uploading_id"]), _dumps(upload)),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def save_statuses(self, statuses: Sequence[tuple[int, str, dict[str, Any]]]) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO order_statuses VALUES (?, ?, ?) "
                "ON CONFLICT (counter_id, status_id) DO UPDATE SET doc = excluded.doc",
                [(cid, key, _dumps(doc)) for cid, key, doc in statuses],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def save_catalog(self, items: Sequence[tuple[int, str, str, dict[str, Any]]]) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO catalog VALUES (?, ?, ?, ?) "
                "ON CONFLICT (counter_id, kind, key) DO UPDATE SET doc = excluded.doc",
                [(cid, kind, key, _dumps(doc)) for cid, kind, key, doc in items],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def clear(self, last_uploading_id: int) -> None:
        """Drops all data but remembers the last uploading id: ids are never reused."""
        db = self._db
        db.execute("BEGIN")
        for table in (
            "contacts",
            "orders",
            "order_history",
            "order_statuses",
            "uploads",
            "catalog",
        ):
            db.execute(f"DELETE FROM {table}")
        db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('last_uploading_id', ?)", (str(last_uploading_id),)
        )
        db.execute("COMMIT")
