"""What the store decides, the same on both backends: how identity updates merge, which of
several writes of one key in a batch holds, and the order a deal's parked events leave in.
PostgreSQL repeats some of these rules in SQL (named where it does); how values are encoded is
``encoding``'s."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from metrica_bridge.outcomes import Outcome
from metrica_bridge.store.base import Identity, IdentityUpdate, LedgerEntry, OrderState, ParkedEvent


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
    """One row per event (the first given wins, as the park keeps the first), in key order."""
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
