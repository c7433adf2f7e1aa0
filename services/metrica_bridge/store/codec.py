"""Pieces both backends share: value encodings, identity merging, migrations on disk."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from typing import TypeVar

from metrica_bridge.outcomes import Outcome
from metrica_bridge.store.base import Identity, IdentityUpdate, LedgerEntry, OrderState, ParkedEvent

T = TypeVar("T")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def utc(dt: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already (the events' times are UTC)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def to_us(dt: datetime) -> int:
    """Exact microseconds since the epoch (no float rounding)."""
    return (utc(dt) - EPOCH) // _US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def now_utc() -> datetime:
    return datetime.now(UTC)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def unique(items: Iterable[str]) -> list[str]:
    """Distinct, sorted: a stable lock order across processes avoids deadlocks."""
    return sorted(set(items))


# Reused: json.dumps with options builds a new encoder per call, which shows on the hot path.
_COMPACT = json.JSONEncoder(separators=(",", ":"))
_SORTED = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def encode_list(values: Sequence[str]) -> str:
    return _COMPACT.encode(list(values)) if values else "[]"


def encode_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    if not headers:
        return "[]"
    return _COMPACT.encode(
        [[name, base64.b64encode(value).decode("ascii")] for name, value in headers]
    )


def decode_headers(raw: str | Sequence[Sequence[str]]) -> tuple[tuple[str, bytes], ...]:
    pairs = json.loads(raw) if isinstance(raw, str) else raw
    return tuple((str(name), base64.b64decode(value)) for name, value in pairs)


def encode_payments(payments: Mapping[str, Decimal]) -> str:
    if not payments:
        return "{}"
    return _SORTED.encode({pid: str(amount) for pid, amount in payments.items()})


def decode_payments(raw: str | Mapping[str, str]) -> dict[str, Decimal]:
    if not raw or raw == "{}":
        return {}
    data = json.loads(raw) if isinstance(raw, str) else raw
    return {str(pid): Decimal(str(amount)) for pid, amount in data.items()}


def fold_updates(updates: Iterable[IdentityUpdate]) -> dict[str, IdentityUpdate]:
    """Several updates of one client in a batch → one, with the same effect applied in order."""
    out: dict[str, IdentityUpdate] = {}
    for update in updates:
        prev = out.get(update.client_uniq_id)
        if prev is None:
            out[update.client_uniq_id] = IdentityUpdate(
                client_uniq_id=update.client_uniq_id,
                client_ids=tuple(sorted(set(update.client_ids))),
                phones=tuple(sorted(set(update.phones))),
                emails=tuple(sorted(set(update.emails))),
                name=update.name,
                consent=update.consent,
                consent_at=update.consent_at if update.consent is not None else None,
            )
        else:
            consent, consent_at = newer_consent(
                prev.consent, prev.consent_at, update.consent, update.consent_at
            )
            out[update.client_uniq_id] = IdentityUpdate(
                client_uniq_id=update.client_uniq_id,
                client_ids=union(prev.client_ids, update.client_ids),
                phones=union(prev.phones, update.phones),
                emails=union(prev.emails, update.emails),
                name=update.name if update.name is not None else prev.name,
                consent=consent,
                consent_at=consent_at,
            )
    return out


def newer_consent(
    current: bool | None, current_at: datetime | None, stated: bool | None, at: datetime | None
) -> tuple[bool | None, datetime | None]:
    """The consent that holds: the one stated by the most recent lead (by its occurred_at), so a
    lead handled late (released from the park, replayed, on a slower partition) cannot bring
    back an older choice. Without a time on either side, the one handled last wins."""
    if stated is None:
        return current, current_at
    if current is None or current_at is None or at is None or at >= current_at:
        return stated, at
    return current, current_at


def union(a: Iterable[str], b: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(a).union(b)))


def merge_identity(current: Identity | None, update: IdentityUpdate, now: datetime) -> Identity:
    if current is None:
        return Identity(
            client_uniq_id=update.client_uniq_id,
            client_ids=tuple(sorted(set(update.client_ids))),
            phones=tuple(sorted(set(update.phones))),
            emails=tuple(sorted(set(update.emails))),
            name=update.name,
            consent=True if update.consent is None else update.consent,
            consent_at=update.consent_at if update.consent is not None else None,
            created_at=now,
        )
    consent, consent_at = newer_consent(
        current.consent, current.consent_at, update.consent, update.consent_at
    )
    return replace(
        current,
        client_ids=union(current.client_ids, update.client_ids),
        phones=union(current.phones, update.phones),
        emails=union(current.emails, update.emails),
        name=update.name if update.name is not None else current.name,
        consent=bool(consent),
        consent_at=consent_at,
    )


def last_per_deal(orders: Iterable[OrderState]) -> list[OrderState]:
    """One row per deal (the last given wins, as two upserts in a row would), in key order."""
    by_deal = {order.deal_id: order for order in orders}
    return [by_deal[deal] for deal in sorted(by_deal)]


def first_per_event(parked: Iterable[ParkedEvent]) -> list[ParkedEvent]:
    by_event: dict[str, ParkedEvent] = {}
    for event in parked:
        by_event.setdefault(event.event_id, event)
    return [by_event[eid] for eid in sorted(by_event)]


def park_order(event: ParkedEvent) -> tuple[str, datetime, int, int, str, int, int, str]:
    """Deal, then (occurred_at, version); events without a version first, then by offset."""
    version = event.version
    return (
        event.deal_id,
        event.occurred_at,
        0 if version is None else 1,
        0 if version is None else version,
        event.topic,
        event.partition,
        event.offset,
        event.event_id,
    )


_MIGRATION_NAME = re.compile(r"^(\d{4})_[\w-]+\.sql$")


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of the packaged migrations of a dialect, in version order."""
    folder = resources.files("metrica_bridge.store").joinpath("migrations", dialect)
    found: list[tuple[int, str, str]] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [version for version, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two {dialect} migrations share a version number")
    return found


def settle_ledger(entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
    """One entry per event id, by the ledger's rule: the first outcome wins, except that a
    ``dead_lettered`` one gives way to a later outcome — a DLQ replay settling the event, or
    failing again for another reason (the latest class is the one that holds)."""
    settled: dict[str, LedgerEntry] = {}
    for entry in entries:
        first = settled.get(entry.event_id)
        if first is None or first.outcome == Outcome.DEAD_LETTERED:
            settled[entry.event_id] = entry
    return [settled[event_id] for event_id in sorted(settled)]
