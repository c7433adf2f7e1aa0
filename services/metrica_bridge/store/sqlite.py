"""The embedded SQLite store: one file, shared by the threads and processes of one host.

One connection per store object, guarded by a lock: the engine's worker threads take turns
(SQLite writes one transaction at a time anyway), and every read-then-write runs under
``BEGIN IMMEDIATE`` so other processes on the same file wait on the busy timeout instead of
failing when a read lock would have to be upgraded.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from metrica_bridge.store.base import (
    ORDER_INTENT_PREFIX,
    Changes,
    ClaimLost,
    Claims,
    Identity,
    IdentityUpdate,
    LedgerEntry,
    OrderState,
    ParkedEvent,
    QuotaChange,
    QuotaState,
    StoreError,
    StoreRefused,
    UploadIntent,
)
from metrica_bridge.store.batches import chunks, unique
from metrica_bridge.store.encoding import encode_list, from_us, now_utc, to_us
from metrica_bridge.store.rows import (
    IDENTITY_COLUMNS,
    INTENT,
    INTENT_BEGUN_COLUMNS,
    LEDGER_COLUMNS,
    ORDER_COLUMNS,
    PARKED_COLUMNS,
    Converter,
    identity,
    intent_values,
    ledger_entry,
    listed,
    order_state,
    order_values,
    parked_in_order,
    parked_selected,
    parked_values,
    upload_intent,
)
from metrica_bridge.store.rules import (
    first_per_event,
    fold_updates,
    last_per_deal,
    merge_identity,
    settle_ledger,
)
from metrica_bridge.store.schema import migrations

# Well under SQLite's bound-parameter limit for every statement below.
_CHUNK = 500
_JSON_KEYS = "SELECT value FROM json_each(?)"
_COMPACT = json.JSONEncoder(separators=(",", ":"))
_MIN_VERSION = (3, 24, 0)  # UPSERT


def _opt_us(dt: datetime | None) -> int | None:
    return None if dt is None else to_us(dt)


def _ids(raw: str) -> tuple[str, ...]:
    # Written sorted and unique (encode_list of an Identity's tuples).
    return () if raw == "[]" else tuple(json.loads(raw))


def _blob(raw: bytes) -> bytes:
    return raw  # sqlite3 returns a BLOB as bytes already


# Times as INTEGER microseconds since the epoch (exact, and ordered as numbers), decimals as
# TEXT (exact: SQLite has no decimal type), identifier lists as JSON arrays, booleans as 0/1.
_CONVERT = Converter(
    read_time=from_us,
    write_time=to_us,
    read_decimal=Decimal,
    write_decimal=str,
    read_strings=_ids,
    read_bytes=_blob,
    write_flag=int,
)


class SqliteStore:
    """``Store`` on a SQLite file (WAL, ``synchronous=FULL``: a commit is on disk before the
    offsets it allows are committed, power loss included; see docs/decisions.md)."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        if sqlite3.sqlite_version_info < _MIN_VERSION:
            raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old (3.24 or later needed)")
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                self.path,
                timeout=busy_timeout_s,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # the lock serialises use across threads
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._set_wal(busy_timeout_s)
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA temp_store = MEMORY")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from None
        self._closed = False
        self._json_each = self._has_json_each()

    def _has_json_each(self) -> bool:
        try:
            self._conn.execute("SELECT value FROM json_each('[1]')").fetchall()
        except sqlite3.Error:
            return False  # built without JSON support: a placeholder per key
        return True

    def _set_wal(self, busy_timeout_s: float) -> None:
        # Switching to WAL needs an exclusive lock; processes starting together may collide once.
        deadline = time.monotonic() + busy_timeout_s
        while True:
            try:
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
                continue
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode}, WAL refused")
            return

    # plumbing

    @contextmanager
    def _read(self, op: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._check_open()
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise _error(op, exc) from None

    @contextmanager
    def _write(self, op: str) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken before anything is read."""
        with self._lock:
            self._check_open()
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"store {op} failed: {type(exc).__name__}: {exc}") from None
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                # SQLite may have rolled back already (e.g. on SQLITE_FULL)
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _error(op, exc) from None
                raise

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    def _select_in(
        self,
        conn: sqlite3.Connection,
        sql: str,
        keys: Sequence[str],
        extra: Sequence[Any] = (),
    ) -> Iterator[tuple[Any, ...]]:
        """Run ``sql`` (with one ``{marks}`` placeholder for a list) over ``keys``.

        With SQLite's JSON functions the keys travel as one JSON array: one statement text
        whatever their number, so it is prepared once and stays in the statement cache (a
        placeholder per key made a new statement for every batch size: slower, and the cache
        of prepared statements grew the resident set for hundreds of thousands of events)."""
        if self._json_each:
            yield from conn.execute(sql.format(marks=_JSON_KEYS), [_COMPACT.encode(keys), *extra])
            return
        for part in chunks(keys, _CHUNK):
            marks = ",".join("?" * len(part))
            yield from conn.execute(sql.format(marks=marks), [*part, *extra])

    # lifecycle

    def migrate(self) -> int:
        with self._write("migrate") as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            current = max(applied, default=0)
            for version, name, sql in migrations("sqlite"):
                if version in applied:
                    continue
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, to_us(now_utc())),
                )
                current = max(current, version)
            return current

    def ping(self) -> bool:
        try:
            with self._read("ping") as conn:
                conn.execute("SELECT 1").fetchone()
        except StoreError:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    # ledger

    def outcomes(self, event_ids: Iterable[str]) -> dict[str, LedgerEntry]:
        keys = unique(event_ids)
        if not keys:
            return {}
        sql = f"SELECT {LEDGER_COLUMNS} FROM ledger WHERE event_id IN ({{marks}})"
        with self._read("outcomes") as conn:
            return {row[0]: ledger_entry(row, _CONVERT) for row in self._select_in(conn, sql, keys)}

    def purge_ledger(self, older_than: datetime) -> int:
        with self._write("purge_ledger") as conn:
            cur = conn.execute("DELETE FROM ledger WHERE recorded_at < ?", (to_us(older_than),))
            conn.execute(
                "DELETE FROM inflight_events WHERE intent_id IN (SELECT intent_id FROM"
                " upload_intents WHERE started_at < ?)",
                (to_us(older_than),),
            )
            conn.execute("DELETE FROM upload_intents WHERE started_at < ?", (to_us(older_than),))
            return cur.rowcount

    # identities

    def merge_identities(self, updates: Sequence[IdentityUpdate]) -> dict[str, Identity]:
        folded = fold_updates(updates)
        if not folded:
            return {}
        now = now_utc()
        with self._write("merge_identities") as conn:
            current = self._identities(conn, sorted(folded))
            merged = {
                cid: merge_identity(current.get(cid), update, now) for cid, update in folded.items()
            }
            # most leads repeat what is known already: write only what changed
            changed = [ident for cid, ident in sorted(merged.items()) if ident != current.get(cid)]
            conn.executemany(
                "INSERT INTO identities (client_uniq_id, client_ids, phones, emails, name,"
                " consent, consent_at, has_identifier, uploaded_fingerprint, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (client_uniq_id) DO UPDATE SET client_ids = excluded.client_ids,"
                " phones = excluded.phones, emails = excluded.emails, name = excluded.name,"
                " consent = excluded.consent, consent_at = excluded.consent_at,"
                " has_identifier = excluded.has_identifier",
                [
                    (
                        ident.client_uniq_id,
                        encode_list(ident.client_ids),
                        encode_list(ident.phones),
                        encode_list(ident.emails),
                        ident.name,
                        int(ident.consent),
                        _opt_us(ident.consent_at),
                        int(ident.has_identifier()),
                        ident.uploaded_fingerprint,
                        to_us(ident.created_at or now),
                    )
                    for ident in changed
                ],
            )
            return merged

    def identities(self, client_uniq_ids: Iterable[str]) -> dict[str, Identity]:
        keys = unique(client_uniq_ids)
        if not keys:
            return {}
        with self._read("identities") as conn:
            return self._identities(conn, keys)

    def _identities(self, conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, Identity]:
        sql = f"SELECT {IDENTITY_COLUMNS} FROM identities WHERE client_uniq_id IN ({{marks}})"
        return {row[0]: identity(row, _CONVERT) for row in self._select_in(conn, sql, keys)}

    # orders

    def orders(self, deal_ids: Iterable[str]) -> dict[str, OrderState]:
        keys = unique(deal_ids)
        if not keys:
            return {}
        sql = f"SELECT {ORDER_COLUMNS} FROM orders WHERE deal_id IN ({{marks}})"
        with self._read("orders") as conn:
            return {row[0]: order_state(row, _CONVERT) for row in self._select_in(conn, sql, keys)}

    def claim_orders(self, deal_ids: Iterable[str], owner: str, lease_s: float) -> Claims:
        keys = unique(deal_ids)
        if not keys:
            return Claims()
        claimed: dict[str, int] = {}
        with self._write("claim_orders") as conn:
            now = to_us(now_utc())
            expires = now + _lease_us(lease_s)
            for part in chunks(keys, _CHUNK):
                # Inside the IMMEDIATE transaction nobody else can change the claims between
                # this read and the upsert below.
                live = {
                    row[0]
                    for row in self._select_in(
                        conn,
                        "SELECT deal_id FROM order_claims WHERE deal_id IN ({marks})"
                        " AND expires_at > ?",
                        part,
                        [now],
                    )
                }
                free = [deal for deal in part if deal not in live]
                if not free:
                    continue
                # Epochs never given twice (released claims are deleted: the counter is apart).
                conn.execute("UPDATE claim_epoch SET last = last + ? WHERE id = 1", (len(free),))
                last = int(conn.execute("SELECT last FROM claim_epoch WHERE id = 1").fetchone()[0])
                epochs = {deal: last - len(free) + 1 + i for i, deal in enumerate(free)}
                conn.executemany(
                    "INSERT INTO order_claims (deal_id, owner, expires_at, epoch)"
                    " VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (deal_id) DO UPDATE SET owner = excluded.owner,"
                    " expires_at = excluded.expires_at, epoch = excluded.epoch",
                    [(deal, owner, expires, epochs[deal]) for deal in free],
                )
                claimed.update(epochs)
        return Claims(claimed)

    def renew_claims(self, owner: str, lease_s: float) -> int:
        with self._write("renew_claims") as conn:
            now = to_us(now_utc())
            cur = conn.execute(
                "UPDATE order_claims SET expires_at = ? WHERE owner = ? AND expires_at > ?",
                (now + _lease_us(lease_s), owner, now),
            )
            conn.execute(
                "UPDATE parked SET lease_expires_at = ? WHERE lease_owner = ? AND lease_expires_at > ?",
                (now + _lease_us(lease_s), owner, now),
            )
            return cur.rowcount

    # parked events

    def parked_deals(self, deal_ids: Iterable[str]) -> set[str]:
        keys = unique(deal_ids)
        if not keys:
            return set()
        sql = "SELECT DISTINCT deal_id FROM parked WHERE deal_id IN ({marks})"
        with self._read("parked_deals") as conn:
            return {row[0] for row in self._select_in(conn, sql, keys)}

    def take_ready_parked(
        self,
        topics: Iterable[str],
        owner: str,
        lease_s: float,
        expired_before: datetime,
        limit: int,
        creation_expired_before: datetime | None = None,
    ) -> list[ParkedEvent]:
        topic_list = unique(topics)
        if not topic_list or limit <= 0:
            return []
        creation_expired = creation_expired_before or expired_before
        marks = ",".join(f":t{i}" for i in range(len(topic_list)))
        with self._write("take_ready_parked") as conn:
            now = to_us(now_utc())
            rows = conn.execute(
                # The deal's order and readiness rules of the PostgreSQL store, which explains
                # them; SQLite serialises sweeps by its write lock.
                "WITH deal AS ("
                " SELECT p.event_id, p.deal_id, p.lease_expires_at, p.occurred_at,"
                "  p.version IS NOT NULL AS versioned, coalesce(p.version, 0) AS version,"
                "  p.topic, p.kafka_partition, p.kafka_offset,"
                "  (CASE WHEN EXISTS (SELECT 1 FROM identities i"
                "    WHERE i.client_uniq_id = p.client_uniq_id AND i.has_identifier = 1)"
                "   THEN p.waits_for = 'identity' OR p.parked_at < :creation_expired"
                "    OR EXISTS (SELECT 1 FROM orders o"
                "     WHERE o.deal_id = p.deal_id AND o.created_at IS NOT NULL)"
                "    OR EXISTS (SELECT 1 FROM parked s"
                "     WHERE s.deal_id = p.deal_id AND s.deal_created_at IS NOT NULL)"
                "   ELSE p.parked_at < :expired END) AS ready"
                " FROM parked p WHERE p.deal_id IN"
                f"  (SELECT deal_id FROM parked WHERE topic IN ({marks})))"
                f" SELECT {parked_selected('p')}"
                " FROM parked p JOIN deal d ON d.event_id = p.event_id"
                f" WHERE p.topic IN ({marks}) AND d.ready AND p.lease_expires_at <= :now"
                " AND NOT EXISTS (SELECT 1 FROM deal q"
                "  WHERE q.deal_id = d.deal_id AND q.lease_expires_at > :now)"
                " AND NOT EXISTS (SELECT 1 FROM deal e"
                "  WHERE e.deal_id = d.deal_id AND NOT e.ready AND"
                "  (e.occurred_at, e.versioned, e.version, e.topic, e.kafka_partition,"
                "   e.kafka_offset, e.event_id) < (d.occurred_at, d.versioned, d.version,"
                "   d.topic, d.kafka_partition, d.kafka_offset, d.event_id))"
                " ORDER BY p.deal_id, p.occurred_at, p.version, p.topic, p.kafka_partition,"
                " p.kafka_offset, p.event_id LIMIT :limit",
                {
                    **{f"t{i}": topic for i, topic in enumerate(topic_list)},
                    "now": now,
                    "creation_expired": to_us(creation_expired),
                    "expired": to_us(expired_before),
                    "limit": limit,
                },
            ).fetchall()
            conn.executemany(
                "UPDATE parked SET lease_owner = ?, lease_expires_at = ? WHERE event_id = ?",
                [(owner, now + _lease_us(lease_s), row[0]) for row in rows],
            )
        return parked_in_order(rows, _CONVERT)

    def parked_count(self) -> int:
        with self._read("parked_count") as conn:
            return int(conn.execute("SELECT count(*) FROM parked").fetchone()[0])

    # quota

    def update_quota(self, day: str, change: QuotaChange) -> QuotaState:
        with self._write("update_quota") as conn:
            row = conn.execute("SELECT used, next_at FROM quota WHERE day = ?", (day,)).fetchone()
            state: QuotaState = (0, 0.0) if row is None else (int(row[0]), float(row[1]))
            new = change(*state)
            if new is None:
                return state
            conn.execute(
                "INSERT INTO quota (day, used, next_at) VALUES (?, ?, ?) ON CONFLICT (day)"
                " DO UPDATE SET used = excluded.used, next_at = excluded.next_at",
                (day, new[0], new[1]),
            )
            return new

    def quota_state(self, day: str) -> QuotaState:
        with self._read("quota_state") as conn:
            row = conn.execute("SELECT used, next_at FROM quota WHERE day = ?", (day,)).fetchone()
            return (0, 0.0) if row is None else (int(row[0]), float(row[1]))

    # the unit of work

    # upload intents

    def begin_upload(self, intent: UploadIntent, event_ids: Sequence[str]) -> None:
        with self._write("begin_upload") as conn:
            conn.execute(
                f"INSERT INTO upload_intents ({INTENT_BEGUN_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                intent_values(intent, _CONVERT),
            )
            conn.executemany(
                "INSERT INTO inflight_events (event_id, intent_id) VALUES (?, ?)"
                " ON CONFLICT (event_id) DO UPDATE SET intent_id = excluded.intent_id",
                [(event_id, intent.intent_id) for event_id in unique(event_ids)],
            )

    def finish_upload(self, intent_id: str, uploading_id: str | None) -> None:
        with self._write("finish_upload") as conn:
            conn.execute(
                "UPDATE upload_intents SET resolved = 1, uploading_id = ? WHERE intent_id = ?",
                (uploading_id, intent_id),
            )

    def doubt_upload(self, intent_id: str) -> None:
        with self._write("doubt_upload") as conn:
            conn.execute("UPDATE upload_intents SET in_doubt = 1 WHERE intent_id = ?", (intent_id,))

    def inflight(self, event_ids: Iterable[str]) -> dict[str, UploadIntent]:
        keys = unique(event_ids)
        if not keys:
            return {}
        sql = (
            f"SELECT f.event_id, {listed(INTENT, 'i')} FROM inflight_events f"
            " JOIN upload_intents i ON i.intent_id = f.intent_id WHERE f.event_id IN ({marks})"
            " AND (i.resolved = 0 OR f.event_id NOT LIKE ?)"
        )
        open_orders = (ORDER_INTENT_PREFIX + "%",)
        with self._read("inflight") as conn:
            rows = self._select_in(conn, sql, keys, open_orders)
            return {row[0]: upload_intent(row[1:], _CONVERT) for row in rows}

    def known_uploads(self, since: datetime) -> set[str]:
        with self._read("known_uploads") as conn:
            rows = conn.execute(
                "SELECT uploading_id FROM upload_intents"
                " WHERE started_at >= ? AND uploading_id IS NOT NULL",
                (to_us(since),),
            ).fetchall()
        return {row[0] for row in rows}

    def open_intents(self, since: datetime, until: datetime) -> list[UploadIntent]:
        with self._read("open_intents") as conn:
            rows = conn.execute(
                f"SELECT {listed(INTENT)} FROM upload_intents"
                " WHERE (resolved = 0 OR in_doubt = 1) AND started_at BETWEEN ? AND ? ORDER BY started_at",
                (to_us(since), to_us(until)),
            ).fetchall()
        return [upload_intent(row, _CONVERT) for row in rows]

    def apply(self, changes: Changes) -> None:
        if not changes:
            return
        try:
            with self._write("apply") as conn:
                if changes.owner is not None and changes.orders:
                    self._check_fences(conn, changes, changes.owner)
                for step in _apply_steps(changes):
                    step(conn)
        except (ValueError, TypeError, OverflowError) as exc:
            # a value that cannot be bound (an integer beyond 64 bits, say): the same again fails
            raise StoreRefused(f"store apply failed: {type(exc).__name__}") from None

    def _check_fences(self, conn: sqlite3.Connection, changes: Changes, owner: str) -> None:
        """Raise ``ClaimLost`` (rolling everything back) for the deals written whose claim is
        not this owner's at the epoch it holds; inside the IMMEDIATE transaction nobody can
        take a claim between this check and the writes."""
        deals = unique(o.deal_id for o in changes.orders)
        held = {
            row[0]: (row[1], row[2])
            for row in self._select_in(
                conn,
                "SELECT deal_id, owner, epoch FROM order_claims WHERE deal_id IN ({marks})",
                deals,
            )
        }
        lost = [
            deal for deal in deals if not _holds(held.get(deal), owner, changes.epochs.get(deal))
        ]
        if lost:
            raise ClaimLost(lost)


def _apply_steps(changes: Changes) -> list[Callable[[sqlite3.Connection], object]]:
    now = to_us(now_utc())
    steps: list[Callable[[sqlite3.Connection], object]] = []
    if changes.ledger:
        done = [(e.event_id,) for e in changes.ledger]
        steps.append(
            lambda c: c.executemany("DELETE FROM inflight_events WHERE event_id = ?", done)
        )
        rows = [
            (
                e.event_id,
                e.topic,
                e.outcome,
                e.detail,
                e.upload_id,
                now if e.recorded_at is None else to_us(e.recorded_at),
            )
            for e in settle_ledger(changes.ledger)
        ]
        steps.append(
            lambda c: c.executemany(
                f"INSERT INTO ledger ({LEDGER_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO UPDATE SET"
                " outcome = excluded.outcome, detail = excluded.detail,"
                " upload_id = excluded.upload_id, recorded_at = excluded.recorded_at"
                " WHERE ledger.outcome = 'dead_lettered'",
                rows,
            )
        )
    if changes.orders:
        order_rows = [order_values(o, _CONVERT) for o in last_per_deal(changes.orders)]
        steps.append(
            lambda c: c.executemany(
                f"INSERT INTO orders ({ORDER_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (deal_id) DO UPDATE SET client_uniq_id = excluded.client_uniq_id,"
                " created_at = excluded.created_at, applied_at = excluded.applied_at,"
                " applied_version = excluded.applied_version, status = excluded.status,"
                " revenue = excluded.revenue, cost = excluded.cost, currency = excluded.currency,"
                " deal_amount = excluded.deal_amount, payments = excluded.payments,"
                " sent = excluded.sent",
                order_rows,
            )
        )
    if changes.contacts_uploaded:
        contact_rows = [(cid, fp, now) for cid, fp in sorted(changes.contacts_uploaded.items())]
        steps.append(
            lambda c: c.executemany(
                "INSERT INTO identities (client_uniq_id, uploaded_fingerprint, created_at)"
                " VALUES (?, ?, ?) ON CONFLICT (client_uniq_id) DO UPDATE"
                " SET uploaded_fingerprint = excluded.uploaded_fingerprint",
                contact_rows,
            )
        )
    if changes.release_claims:
        owner = changes.owner
        if owner is None:
            released = [(deal,) for deal in unique(changes.release_claims)]
            steps.append(
                lambda c: c.executemany("DELETE FROM order_claims WHERE deal_id = ?", released)
            )
        else:
            # only where the claim is still ours: a lapsed owner must not free the next one's
            fenced = [
                (deal, owner, changes.epochs.get(deal), changes.epochs.get(deal))
                for deal in unique(changes.release_claims)
            ]
            steps.append(
                lambda c: c.executemany(
                    "DELETE FROM order_claims WHERE deal_id = ? AND owner = ?"
                    " AND (? IS NULL OR epoch = ?)",
                    fenced,
                )
            )
    if changes.park:
        park_rows = [parked_values(p, _CONVERT) for p in first_per_event(changes.park)]
        steps.append(
            lambda c: c.executemany(
                f"INSERT INTO parked ({PARKED_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (event_id) DO NOTHING",
                park_rows,
            )
        )
    if changes.unpark:
        unparked = [(eid,) for eid in unique(changes.unpark)]
        steps.append(lambda c: c.executemany("DELETE FROM parked WHERE event_id = ?", unparked))
    if changes.unlease:
        unleased = [(eid,) for eid in unique(changes.unlease)]
        steps.append(
            lambda c: c.executemany(
                "UPDATE parked SET lease_owner = NULL, lease_expires_at = 0 WHERE event_id = ?",
                unleased,
            )
        )
    return steps


def _holds(claim: tuple[str, int] | None, owner: str, epoch: int | None) -> bool:
    return claim is not None and claim[0] == owner and (epoch is None or claim[1] == epoch)


def _error(op: str, exc: sqlite3.Error) -> StoreError:
    message = f"store {op} failed: {type(exc).__name__}: {exc}"
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        return StoreRefused(message)  # the data, not the store's state: the same again fails
    return StoreError(message)


def _lease_us(lease_s: float) -> int:
    return int(timedelta(seconds=lease_s) / timedelta(microseconds=1))


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements (``executescript`` would commit our transaction)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            buffer = ""
            if statement.strip(";").strip() and not _only_comments(statement):
                yield statement
    if buffer.strip() and not _only_comments(buffer):
        raise ValueError("migration ends with an incomplete statement")


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())
