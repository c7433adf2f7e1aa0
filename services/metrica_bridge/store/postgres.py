"""The PostgreSQL store, shared by several instances of the service.

Every operation that several processes may race on is one statement whose row locks decide
the winner: claims and the quota are ``INSERT … ON CONFLICT … DO UPDATE … WHERE … RETURNING``,
identities merge inside the upsert (set union in SQL), parked events are leased with
``SELECT … FOR UPDATE SKIP LOCKED``. Batches go in as arrays (``unnest``) so a call costs one
round trip per table, whatever the number of rows, and rows are sent in key order so concurrent
transactions lock them in the same order (no deadlocks).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
import psycopg_pool
from psycopg import Connection

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
from metrica_bridge.store.batches import unique
from metrica_bridge.store.encoding import utc
from metrica_bridge.store.rows import (
    IDENTITY_COLUMNS,
    INTENT,
    INTENT_BEGUN_COLUMNS,
    LEDGER_COLUMNS,
    ORDER_COLUMNS,
    PARKED_COLUMNS,
    Converter,
    as_is,
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
from metrica_bridge.store.rules import first_per_event, fold_updates, last_per_deal, settle_ledger
from metrica_bridge.store.schema import migrations

# pg_advisory_lock key serialising migrations across instances ("metrica-bridge" in ASCII).
MIGRATION_LOCK_KEY = 0x6D65747269636162
# Parked event e comes before d in their deal's order (rules.park_order).
_EARLIER = (
    "(e.occurred_at, e.versioned, e.version, e.topic, e.kafka_partition, e.kafka_offset,"
    " e.event_id) < (d.occurred_at, d.versioned, d.version, d.topic, d.kafka_partition,"
    " d.kafka_offset, d.event_id)"
)
# pg_advisory_xact_lock key serialising park sweeps across instances.
SWEEP_LOCK_KEY = MIGRATION_LOCK_KEY + 1

Conn = Connection[tuple[Any, ...]]


def _opt_utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else utc(dt)


def _strings(values: list[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))  # an array has no order of its own once merged in SQL


# Times as timestamptz (read back in UTC, the session's zone), numeric as Decimal and bytea as
# memoryview, identifier lists as text[]; psycopg turns booleans into booleans both ways.
_CONVERT = Converter(
    read_time=utc,
    write_time=utc,
    read_decimal=as_is,
    write_decimal=as_is,
    read_strings=_strings,
    read_bytes=bytes,
    write_flag=as_is,
)


def _error(op: str, exc: Exception) -> StoreError:
    """A message without data values: the class, the SQLSTATE and libpq's primary message."""
    text = ""
    if isinstance(exc, psycopg.Error):
        primary = exc.diag.message_primary
        text = primary if primary else (str(exc).splitlines() or [""])[0]
        if exc.sqlstate:
            text = f"[{exc.sqlstate}] {text}"
    message = f"store {op} failed: {type(exc).__name__} {text}".rstrip()
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        # the data itself (a NUL in a string, a constraint): the same write fails again
        return StoreRefused(message)
    return StoreError(message)


class PostgresStore:
    """``Store`` on PostgreSQL through a psycopg connection pool."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        connect_timeout_s: float = 30.0,
        display_url: str = "postgresql://…",
    ) -> None:
        self.display_url = display_url  # the URL with its password removed, for messages
        self._pool: psycopg_pool.ConnectionPool[Conn] = psycopg_pool.ConnectionPool(
            conninfo=url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},
            configure=_configure,
            open=False,
            name="metrica-bridge-store",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except psycopg.Error as exc:  # PoolTimeout included
            self._pool.close()
            raise StoreError(
                f"cannot connect to PostgreSQL store {display_url}: {type(exc).__name__}"
            ) from None

    @contextmanager
    def _conn(self, op: str) -> Iterator[Conn]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg_pool.PoolClosed:
            raise StoreError("store is closed") from None
        except psycopg.Error as exc:  # PoolTimeout included
            raise _error(op, exc) from None

    # lifecycle

    def migrate(self) -> int:
        with self._conn("migrate") as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
                current = max(applied, default=0)
                for version, name, sql in migrations("postgres"):
                    if version in applied:
                        continue
                    with conn.transaction():
                        conn.execute(sql.encode("utf-8"))  # no parameters: several statements
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                            (version, name),
                        )
                    current = max(current, version)
                return current
            finally:
                if not conn.closed:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))

    def ping(self) -> bool:
        try:
            with self._conn("ping") as conn:
                conn.execute("SELECT 1").fetchone()
        except StoreError:
            return False
        return True

    def close(self) -> None:
        self._pool.close()

    # ledger

    def outcomes(self, event_ids: Iterable[str]) -> dict[str, LedgerEntry]:
        keys = unique(event_ids)
        if not keys:
            return {}
        with self._conn("outcomes") as conn:
            rows = conn.execute(
                f"SELECT {LEDGER_COLUMNS} FROM ledger WHERE event_id = ANY(%s)", (keys,)
            ).fetchall()
        return {row[0]: ledger_entry(row, _CONVERT) for row in rows}

    def purge_ledger(self, older_than: datetime) -> int:
        with self._conn("purge_ledger") as conn:
            cur = conn.execute("DELETE FROM ledger WHERE recorded_at < %s", (utc(older_than),))
            conn.execute(
                "DELETE FROM inflight_events WHERE intent_id IN (SELECT intent_id FROM"
                " upload_intents WHERE started_at < %s)",
                (utc(older_than),),
            )
            conn.execute("DELETE FROM upload_intents WHERE started_at < %s", (utc(older_than),))
            return cur.rowcount

    # identities

    def merge_identities(self, updates: Sequence[IdentityUpdate]) -> dict[str, Identity]:
        folded = fold_updates(updates)
        if not folded:
            return {}
        rows = [folded[cid] for cid in sorted(folded)]
        with self._conn("merge_identities") as conn:
            result = conn.execute(
                "INSERT INTO identities AS i (client_uniq_id, client_ids, phones, emails, name,"
                " consent, consent_at)"
                " SELECT u.cid, ARRAY(SELECT jsonb_array_elements_text(u.ids)),"
                "  ARRAY(SELECT jsonb_array_elements_text(u.phones)),"
                "  ARRAY(SELECT jsonb_array_elements_text(u.emails)), u.name, u.consent, u.at"
                " FROM unnest(%s::text[], %s::jsonb[], %s::jsonb[], %s::jsonb[], %s::text[],"
                "  %s::boolean[], %s::timestamptz[]) AS u(cid, ids, phones, emails, name, consent, at)"
                " ORDER BY u.cid"
                " ON CONFLICT (client_uniq_id) DO UPDATE SET"
                "  client_ids = ARRAY(SELECT DISTINCT unnest(i.client_ids || EXCLUDED.client_ids)),"
                "  phones = ARRAY(SELECT DISTINCT unnest(i.phones || EXCLUDED.phones)),"
                "  emails = ARRAY(SELECT DISTINCT unnest(i.emails || EXCLUDED.emails)),"
                "  name = COALESCE(EXCLUDED.name, i.name),"
                # codec.newer_consent, in SQL: the consent of the most recent lead holds
                f"  consent = CASE WHEN {_NEWER_CONSENT} THEN EXCLUDED.consent ELSE i.consent END,"
                f"  consent_at = CASE WHEN {_NEWER_CONSENT} THEN EXCLUDED.consent_at"
                "   ELSE i.consent_at END"
                " RETURNING " + IDENTITY_COLUMNS,
                (
                    [u.client_uniq_id for u in rows],
                    [json.dumps(list(u.client_ids)) for u in rows],
                    [json.dumps(list(u.phones)) for u in rows],
                    [json.dumps(list(u.emails)) for u in rows],
                    [u.name for u in rows],
                    [u.consent for u in rows],
                    [u.consent_at if u.consent is not None else None for u in rows],
                ),
            ).fetchall()
        return {row[0]: identity(row, _CONVERT) for row in result}

    def identities(self, client_uniq_ids: Iterable[str]) -> dict[str, Identity]:
        keys = unique(client_uniq_ids)
        if not keys:
            return {}
        with self._conn("identities") as conn:
            rows = conn.execute(
                f"SELECT {IDENTITY_COLUMNS} FROM identities WHERE client_uniq_id = ANY(%s)",
                (keys,),
            ).fetchall()
        return {row[0]: identity(row, _CONVERT) for row in rows}

    # orders

    def orders(self, deal_ids: Iterable[str]) -> dict[str, OrderState]:
        keys = unique(deal_ids)
        if not keys:
            return {}
        with self._conn("orders") as conn:
            rows = conn.execute(
                f"SELECT {ORDER_COLUMNS} FROM orders WHERE deal_id = ANY(%s)", (keys,)
            ).fetchall()
        return {row[0]: order_state(row, _CONVERT) for row in rows}

    def claim_orders(self, deal_ids: Iterable[str], owner: str, lease_s: float) -> Claims:
        keys = unique(deal_ids)
        if not keys:
            return Claims()
        with self._conn("claim_orders") as conn:
            rows = conn.execute(
                "INSERT INTO order_claims AS c (deal_id, owner, expires_at, epoch)"
                " SELECT d, %s, now() + %s * interval '1 second', nextval('order_claim_epoch')"
                " FROM unnest(%s::text[]) AS d"
                " ON CONFLICT (deal_id) DO UPDATE"
                " SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at,"
                " epoch = EXCLUDED.epoch"
                " WHERE c.expires_at <= now()"
                " RETURNING deal_id, epoch",
                (owner, lease_s, keys),
            ).fetchall()
        return Claims({row[0]: int(row[1]) for row in rows})

    def renew_claims(self, owner: str, lease_s: float) -> int:
        with self._conn("renew_claims") as conn:
            # Rows are locked in key order, like every other statement on these tables: a
            # heartbeat racing the same process's apply() must not deadlock with it.
            cur = conn.execute(
                "UPDATE order_claims c SET expires_at = now() + %s * interval '1 second'"
                " FROM (SELECT deal_id FROM order_claims WHERE owner = %s AND expires_at > now()"
                "  ORDER BY deal_id FOR UPDATE) s WHERE c.deal_id = s.deal_id",
                (lease_s, owner),
            )
            conn.execute(
                "UPDATE parked p SET lease_expires_at = now() + %s * interval '1 second'"
                " FROM (SELECT event_id FROM parked WHERE lease_owner = %s"
                "  AND lease_expires_at > now() ORDER BY event_id FOR UPDATE) s"
                " WHERE p.event_id = s.event_id",
                (lease_s, owner),
            )
            return cur.rowcount

    # parked events

    def parked_deals(self, deal_ids: Iterable[str]) -> set[str]:
        keys = unique(deal_ids)
        if not keys:
            return set()
        with self._conn("parked_deals") as conn:
            rows = conn.execute(
                "SELECT DISTINCT deal_id FROM parked WHERE deal_id = ANY(%s::text[])", (keys,)
            ).fetchall()
        return {row[0] for row in rows}

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
        with self._conn("take_ready_parked") as conn, conn.transaction():
            # Sweeps take turns, so each sees the leases the one before it took: a deal with a
            # leased event is left alone (below), and two sweeps running at once would each
            # miss the other's lease and take both ends of one deal.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SWEEP_LOCK_KEY,))
            rows = conn.execute(
                "WITH deal AS ("
                # Every parked event of the deals this sweep may touch, whatever their topic,
                # with whether it may leave now and its place in the deal's order.
                " SELECT p.event_id, p.deal_id, p.lease_expires_at, p.occurred_at,"
                "  p.version IS NOT NULL AS versioned, coalesce(p.version, 0) AS version,"
                "  p.topic, p.kafka_partition, p.kafka_offset,"
                "  (CASE WHEN EXISTS (SELECT 1 FROM identities i"
                "    WHERE i.client_uniq_id = p.client_uniq_id AND i.has_identifier)"
                "   THEN p.waits_for = 'identity' OR p.parked_at < %(creation_expired)s"
                "    OR EXISTS (SELECT 1 FROM orders o"
                "     WHERE o.deal_id = p.deal_id AND o.created_at IS NOT NULL)"
                "    OR EXISTS (SELECT 1 FROM parked s"
                "     WHERE s.deal_id = p.deal_id AND s.deal_created_at IS NOT NULL)"
                "   ELSE p.parked_at < %(expired)s END) AS ready"
                " FROM parked p WHERE p.deal_id IN"
                "  (SELECT deal_id FROM parked WHERE topic = ANY(%(topics)s))),"
                " ready AS ("
                " SELECT p.event_id FROM parked p JOIN deal d ON d.event_id = p.event_id"
                " WHERE p.topic = ANY(%(topics)s) AND d.ready AND p.lease_expires_at <= now()"
                # One deal's events leave the park in order, one sweep's worth at a time
                # (issue 16, item 13: a later payment reached Metrica alone, before the earlier
                # one): none while another of the deal is in flight (leased, here or elsewhere),
                # and none ahead of an earlier one that must still wait.
                "  AND NOT EXISTS (SELECT 1 FROM deal q"
                "   WHERE q.deal_id = d.deal_id AND q.lease_expires_at > now())"
                "  AND NOT EXISTS (SELECT 1 FROM deal e"
                "   WHERE e.deal_id = d.deal_id AND NOT e.ready AND " + _EARLIER + ")"
                " ORDER BY p.deal_id, p.occurred_at, p.version NULLS FIRST, p.topic,"
                "  p.kafka_partition, p.kafka_offset, p.event_id"
                " LIMIT %(limit)s FOR UPDATE OF p SKIP LOCKED)"
                " UPDATE parked SET lease_owner = %(owner)s,"
                "  lease_expires_at = now() + %(lease)s * interval '1 second'"
                " FROM ready WHERE parked.event_id = ready.event_id"
                " RETURNING " + parked_selected("parked"),
                {
                    "topics": topic_list,
                    "expired": utc(expired_before),
                    "creation_expired": utc(creation_expired),
                    "limit": limit,
                    "owner": owner,
                    "lease": lease_s,
                },
            ).fetchall()
        return parked_in_order(rows, _CONVERT)

    def parked_count(self) -> int:
        with self._conn("parked_count") as conn:
            row = conn.execute("SELECT count(*) FROM parked").fetchone()
        return 0 if row is None else int(row[0])

    # quota

    def update_quota(self, day: str, change: QuotaChange) -> QuotaState:
        with self._conn("update_quota") as conn, conn.transaction():
            conn.execute(
                "INSERT INTO quota (day, used, next_at) VALUES (%s, 0, 0) ON CONFLICT DO NOTHING",
                (day,),
            )
            # The row lock serialises every process's decision for this quota day.
            row = conn.execute(
                "SELECT used, next_at FROM quota WHERE day = %s FOR UPDATE", (day,)
            ).fetchone()
            state: QuotaState = (0, 0.0) if row is None else (int(row[0]), float(row[1]))
            new = change(*state)
            if new is None:
                return state
            conn.execute(
                "UPDATE quota SET used = %s, next_at = %s WHERE day = %s", (new[0], new[1], day)
            )
            return new

    def quota_state(self, day: str) -> QuotaState:
        with self._conn("quota_state") as conn:
            row = conn.execute("SELECT used, next_at FROM quota WHERE day = %s", (day,)).fetchone()
        return (0, 0.0) if row is None else (int(row[0]), float(row[1]))

    # the unit of work

    # upload intents

    def begin_upload(self, intent: UploadIntent, event_ids: Sequence[str]) -> None:
        with self._conn("begin_upload") as conn, conn.transaction():
            conn.execute(
                f"INSERT INTO upload_intents ({INTENT_BEGUN_COLUMNS}) VALUES (%s, %s, %s, %s, %s)",
                intent_values(intent, _CONVERT),
            )
            conn.execute(
                "INSERT INTO inflight_events (event_id, intent_id)"
                " SELECT e, %s FROM unnest(%s::text[]) AS x(e)"
                " ON CONFLICT (event_id) DO UPDATE SET intent_id = excluded.intent_id",
                (intent.intent_id, sorted(set(event_ids))),
            )

    def finish_upload(self, intent_id: str, uploading_id: str | None) -> None:
        with self._conn("finish_upload") as conn:
            conn.execute(
                "UPDATE upload_intents SET resolved = TRUE, uploading_id = %s WHERE intent_id = %s",
                (uploading_id, intent_id),
            )

    def doubt_upload(self, intent_id: str) -> None:
        with self._conn("doubt_upload") as conn:
            conn.execute(
                "UPDATE upload_intents SET in_doubt = TRUE WHERE intent_id = %s", (intent_id,)
            )

    def inflight(self, event_ids: Iterable[str]) -> dict[str, UploadIntent]:
        keys = unique(event_ids)
        if not keys:
            return {}
        with self._conn("inflight") as conn:
            rows = conn.execute(
                f"SELECT f.event_id, {listed(INTENT, 'i')} FROM inflight_events f"
                " JOIN upload_intents i ON i.intent_id = f.intent_id"
                " WHERE f.event_id = ANY(%s::text[]) AND (NOT i.resolved OR f.event_id NOT LIKE %s)",
                (keys, ORDER_INTENT_PREFIX + "%"),
            ).fetchall()
        return {row[0]: upload_intent(row[1:], _CONVERT) for row in rows}

    def known_uploads(self, since: datetime) -> set[str]:
        with self._conn("known_uploads") as conn:
            rows = conn.execute(
                "SELECT uploading_id FROM upload_intents"
                " WHERE started_at >= %s AND uploading_id IS NOT NULL",
                (utc(since),),
            ).fetchall()
        return {row[0] for row in rows}

    def open_intents(self, since: datetime, until: datetime) -> list[UploadIntent]:
        with self._conn("open_intents") as conn:
            rows = conn.execute(
                f"SELECT {listed(INTENT)} FROM upload_intents"
                " WHERE (NOT resolved OR in_doubt) AND started_at BETWEEN %s AND %s ORDER BY started_at",
                (utc(since), utc(until)),
            ).fetchall()
        return [upload_intent(row, _CONVERT) for row in rows]

    def apply(self, changes: Changes) -> None:
        if not changes:
            return
        with self._conn("apply") as conn, conn.transaction():
            _apply(conn, changes)


_NEWER_CONSENT = (
    "EXCLUDED.consent IS NOT NULL AND (i.consent IS NULL OR i.consent_at IS NULL"
    " OR EXCLUDED.consent_at IS NULL OR EXCLUDED.consent_at >= i.consent_at)"
)


def _arrays(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows turned into one array per column, for ``unnest``: a batch is one statement."""
    return [list(column) for column in zip(*rows, strict=True)]


def _configure(conn: Conn) -> None:
    conn.execute("SET TIME ZONE 'UTC'")


def _check_fences(conn: Conn, changes: Changes, owner: str) -> None:
    """Raise ``ClaimLost`` (rolling everything back) for the deals written whose claim is not
    this owner's at the epoch it holds. The claim rows stay locked to the commit: a claim
    racing this transaction waits, then finds them released."""
    deals = unique(o.deal_id for o in changes.orders)
    rows = conn.execute(
        "SELECT deal_id, owner, epoch FROM order_claims WHERE deal_id = ANY(%s::text[])"
        " ORDER BY deal_id FOR UPDATE",
        (deals,),
    ).fetchall()
    held = {row[0]: (row[1], int(row[2])) for row in rows}
    lost = []
    for deal in deals:
        claim, epoch = held.get(deal), changes.epochs.get(deal)
        if claim is None or claim[0] != owner or (epoch is not None and claim[1] != epoch):
            lost.append(deal)
    if lost:
        raise ClaimLost(lost)


def _apply(conn: Conn, changes: Changes) -> None:
    if changes.owner is not None and changes.orders:
        _check_fences(conn, changes, changes.owner)
    if changes.ledger:
        ledger = settle_ledger(changes.ledger)
        conn.execute(
            "DELETE FROM inflight_events WHERE event_id = ANY(%s::text[])",
            ([e.event_id for e in ledger],),
        )
        conn.execute(
            f"INSERT INTO ledger ({LEDGER_COLUMNS})"
            " SELECT e, t, o, d, u, COALESCE(r, now())"
            " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
            "  %s::timestamptz[]) AS x(e, t, o, d, u, r)"
            " ON CONFLICT (event_id) DO UPDATE SET"
            " outcome = excluded.outcome, detail = excluded.detail,"
            " upload_id = excluded.upload_id, recorded_at = excluded.recorded_at"
            " WHERE ledger.outcome = 'dead_lettered'",
            (
                [e.event_id for e in ledger],
                [e.topic for e in ledger],
                [e.outcome for e in ledger],
                [e.detail for e in ledger],
                [e.upload_id for e in ledger],
                [_opt_utc(e.recorded_at) for e in ledger],
            ),
        )
    if changes.orders:
        order_rows = [order_values(o, _CONVERT) for o in last_per_deal(changes.orders)]
        conn.execute(
            f"INSERT INTO orders ({ORDER_COLUMNS})"
            " SELECT d, c, ca, aa, av, s, r, co, cu, da, p::jsonb, se"
            " FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[],"
            "  %s::bigint[], %s::text[], %s::numeric[], %s::numeric[], %s::text[],"
            "  %s::numeric[], %s::text[], %s::boolean[])"
            "  AS x(d, c, ca, aa, av, s, r, co, cu, da, p, se)"
            " ON CONFLICT (deal_id) DO UPDATE SET client_uniq_id = EXCLUDED.client_uniq_id,"
            " created_at = EXCLUDED.created_at, applied_at = EXCLUDED.applied_at,"
            " applied_version = EXCLUDED.applied_version, status = EXCLUDED.status,"
            " revenue = EXCLUDED.revenue, cost = EXCLUDED.cost, currency = EXCLUDED.currency,"
            " deal_amount = EXCLUDED.deal_amount, payments = EXCLUDED.payments,"
            " sent = EXCLUDED.sent",
            _arrays(order_rows),
        )
    if changes.contacts_uploaded:
        contacts = sorted(changes.contacts_uploaded.items())
        conn.execute(
            "INSERT INTO identities AS i (client_uniq_id, uploaded_fingerprint)"
            " SELECT * FROM unnest(%s::text[], %s::text[])"
            " ON CONFLICT (client_uniq_id) DO UPDATE"
            " SET uploaded_fingerprint = EXCLUDED.uploaded_fingerprint",
            ([cid for cid, _ in contacts], [fp for _, fp in contacts]),
        )
    if changes.release_claims:
        deals = unique(changes.release_claims)
        if changes.owner is None:
            conn.execute(
                "DELETE FROM order_claims WHERE deal_id IN (SELECT deal_id FROM order_claims"
                " WHERE deal_id = ANY(%s::text[]) ORDER BY deal_id FOR UPDATE)",
                (deals,),
            )
        else:
            # only where the claim is still ours: a lapsed owner must not free the next one's
            conn.execute(
                "DELETE FROM order_claims WHERE deal_id IN (SELECT c.deal_id FROM order_claims c"
                " JOIN unnest(%s::text[], %s::bigint[]) AS x(d, e) ON c.deal_id = x.d"
                " WHERE c.owner = %s AND (x.e IS NULL OR c.epoch = x.e)"
                " ORDER BY c.deal_id FOR UPDATE OF c)",
                (deals, [changes.epochs.get(d) for d in deals], changes.owner),
            )
    if changes.park:
        park_rows = [parked_values(p, _CONVERT) for p in first_per_event(changes.park)]
        conn.execute(
            f"INSERT INTO parked ({PARKED_COLUMNS})"
            " SELECT e, t, pa, o, k, v, h::jsonb, c, d, oa, ve, pk, ts, w, dc"
            " FROM unnest(%s::text[], %s::text[], %s::integer[], %s::bigint[], %s::bytea[],"
            "  %s::bytea[], %s::text[], %s::text[], %s::text[], %s::timestamptz[],"
            "  %s::bigint[], %s::timestamptz[], %s::bigint[], %s::text[], %s::timestamptz[])"
            "  AS x(e, t, pa, o, k, v, h, c, d, oa, ve, pk, ts, w, dc)"
            " ON CONFLICT (event_id) DO NOTHING",
            _arrays(park_rows),
        )
    if changes.unpark:
        conn.execute(
            "DELETE FROM parked WHERE event_id IN (SELECT event_id FROM parked"
            " WHERE event_id = ANY(%s::text[]) ORDER BY event_id FOR UPDATE)",
            (unique(changes.unpark),),
        )
    if changes.unlease:
        conn.execute(
            "UPDATE parked p SET lease_owner = NULL, lease_expires_at = '-infinity'"
            " FROM (SELECT event_id FROM parked WHERE event_id = ANY(%s::text[])"
            "  ORDER BY event_id FOR UPDATE) s WHERE p.event_id = s.event_id",
            (unique(changes.unlease),),
        )
