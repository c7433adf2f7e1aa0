"""The store's rows, shared by both backends: the columns each statement names, the domain
objects rebuilt from a row and the values a row is written from.

The two databases hold a few kinds of value in different types (times, decimals, identifier
lists, bytes, booleans); a backend passes its ``Converter`` for those and keeps only its SQL,
so a column added to a table is added once, and both backends read it back alike."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from metrica_bridge.outcomes import Outcome
from metrica_bridge.store.base import Identity, LedgerEntry, OrderState, ParkedEvent, UploadIntent
from metrica_bridge.store.encoding import (
    decode_headers,
    decode_payments,
    encode_headers,
    encode_payments,
)
from metrica_bridge.store.rules import park_order

Row = Sequence[Any]


@dataclass(frozen=True, slots=True)
class Converter:
    """How one backend holds the values the two databases type differently. Booleans need no
    entry on the way back: ``bool`` reads SQLite's 0/1 and PostgreSQL's booleans alike."""

    read_time: Callable[[Any], datetime]
    write_time: Callable[[datetime], Any]
    read_decimal: Callable[[Any], Decimal]
    write_decimal: Callable[[Decimal], Any]
    read_strings: Callable[[Any], tuple[str, ...]]  # an identifier list: sorted, unique
    read_bytes: Callable[[Any], bytes]
    write_flag: Callable[[bool], Any]


def as_is(value: Any) -> Any:
    """For a value the driver already hands over in the domain's type."""
    return value


def listed(names: Iterable[str], table: str = "") -> str:
    """``a, b, c``, each qualified by ``table`` when given (a join or a correlated subquery)."""
    prefix = f"{table}." if table else ""
    return ", ".join(prefix + name for name in names)


LEDGER = ("event_id", "topic", "outcome", "detail", "upload_id", "recorded_at")
IDENTITY = (
    "client_uniq_id",
    "client_ids",
    "phones",
    "emails",
    "name",
    "consent",
    "uploaded_fingerprint",
    "created_at",
    "consent_at",
)
ORDER = (
    "deal_id",
    "client_uniq_id",
    "created_at",
    "applied_at",
    "applied_version",
    "status",
    "revenue",
    "cost",
    "currency",
    "deal_amount",
    "payments",
    "sent",
)
# What a parked row is written with; read back, its last column is the deal's earliest
# creation time any of its parked events names (``parked_selected``), not the row's own.
PARKED = (
    "event_id",
    "topic",
    "kafka_partition",
    "kafka_offset",
    "record_key",
    "record_value",
    "headers",
    "client_uniq_id",
    "deal_id",
    "occurred_at",
    "version",
    "parked_at",
    "timestamp_ms",
    "waits_for",
    "deal_created_at",
)
# An intent as begun; resolving it sets the last two.
INTENT_BEGUN = ("intent_id", "owner", "endpoint", "records", "started_at")
INTENT = (*INTENT_BEGUN, "resolved", "uploading_id", "in_doubt")

LEDGER_COLUMNS = listed(LEDGER)
IDENTITY_COLUMNS = listed(IDENTITY)
ORDER_COLUMNS = listed(ORDER)
PARKED_COLUMNS = listed(PARKED)
INTENT_BEGUN_COLUMNS = listed(INTENT_BEGUN)


def parked_selected(table: str) -> str:
    """The columns of ``parked_event`` from the parked row ``table``."""
    return (
        listed(PARKED[:-1], table) + ", (SELECT min(s.deal_created_at) FROM parked s"
        f" WHERE s.deal_id = {table}.deal_id)"
    )


def _opt_time(value: Any, conv: Converter) -> datetime | None:
    return None if value is None else conv.read_time(value)


def _opt_decimal(value: Any, conv: Converter) -> Decimal | None:
    return None if value is None else conv.read_decimal(value)


def _written_time(value: datetime | None, conv: Converter) -> Any:
    return None if value is None else conv.write_time(value)


def _written_decimal(value: Decimal | None, conv: Converter) -> Any:
    return None if value is None else conv.write_decimal(value)


def ledger_entry(row: Row, conv: Converter) -> LedgerEntry:
    """From ``LEDGER``."""
    return LedgerEntry(
        event_id=row[0],
        topic=row[1],
        outcome=Outcome(row[2]),
        detail=row[3],
        upload_id=row[4],
        recorded_at=conv.read_time(row[5]),
    )


def identity(row: Row, conv: Converter) -> Identity:
    """From ``IDENTITY``."""
    return Identity(
        client_uniq_id=row[0],
        client_ids=conv.read_strings(row[1]),
        phones=conv.read_strings(row[2]),
        emails=conv.read_strings(row[3]),
        name=row[4],
        consent=True if row[5] is None else bool(row[5]),  # NULL: never stated, default on
        consent_at=_opt_time(row[8], conv),
        uploaded_fingerprint=row[6],
        created_at=conv.read_time(row[7]),
    )


def order_state(row: Row, conv: Converter) -> OrderState:
    """From ``ORDER``."""
    return OrderState(
        deal_id=row[0],
        client_uniq_id=row[1],
        created_at=_opt_time(row[2], conv),
        applied_at=_opt_time(row[3], conv),
        applied_version=row[4],
        status=row[5],
        revenue=_opt_decimal(row[6], conv),
        cost=_opt_decimal(row[7], conv),
        currency=row[8],
        deal_amount=_opt_decimal(row[9], conv),
        payments=decode_payments(row[10]),
        sent=bool(row[11]),
    )


def order_values(order: OrderState, conv: Converter) -> tuple[Any, ...]:
    """In ``ORDER``'s order."""
    return (
        order.deal_id,
        order.client_uniq_id,
        _written_time(order.created_at, conv),
        _written_time(order.applied_at, conv),
        order.applied_version,
        order.status,
        _written_decimal(order.revenue, conv),
        _written_decimal(order.cost, conv),
        order.currency,
        _written_decimal(order.deal_amount, conv),
        encode_payments(order.payments),
        conv.write_flag(order.sent),
    )


def parked_event(row: Row, conv: Converter) -> ParkedEvent:
    """From ``parked_selected``."""
    return ParkedEvent(
        event_id=row[0],
        topic=row[1],
        partition=row[2],
        offset=row[3],
        key=None if row[4] is None else conv.read_bytes(row[4]),
        value=conv.read_bytes(row[5]),
        headers=decode_headers(row[6]),
        client_uniq_id=row[7],
        deal_id=row[8],
        occurred_at=conv.read_time(row[9]),
        version=row[10],
        parked_at=conv.read_time(row[11]),
        timestamp_ms=row[12],
        waits_for=row[13],
        deal_created_at=_opt_time(row[14], conv),
    )


def parked_in_order(rows: Iterable[Row], conv: Converter) -> list[ParkedEvent]:
    """In the order a deal's events leave the park (``rules.park_order``), which neither
    backend's statement promises: PostgreSQL's ``RETURNING`` has no order at all."""
    events = [parked_event(row, conv) for row in rows]
    events.sort(key=park_order)
    return events


def parked_values(event: ParkedEvent, conv: Converter) -> tuple[Any, ...]:
    """In ``PARKED``'s order."""
    return (
        event.event_id,
        event.topic,
        event.partition,
        event.offset,
        event.key,
        event.value,
        encode_headers(event.headers),
        event.client_uniq_id,
        event.deal_id,
        conv.write_time(event.occurred_at),
        event.version,
        conv.write_time(event.parked_at),
        event.timestamp_ms,
        event.waits_for,
        _written_time(event.deal_created_at, conv),
    )


def upload_intent(row: Row, conv: Converter) -> UploadIntent:
    """From ``INTENT``, or ``INTENT_BEGUN`` (an intent read as open: not resolved, no id)."""
    resolved, uploading_id, in_doubt = (
        (bool(row[5]), row[6], bool(row[7]))
        if len(row) > len(INTENT_BEGUN)
        else (False, None, False)
    )
    return UploadIntent(
        row[0], row[1], row[2], row[3], conv.read_time(row[4]), resolved, uploading_id, in_doubt
    )


def intent_values(intent: UploadIntent, conv: Converter) -> tuple[Any, ...]:
    """In ``INTENT_BEGUN``'s order."""
    return (
        intent.intent_id,
        intent.owner,
        intent.endpoint,
        intent.records,
        conv.write_time(intent.started_at),
    )
