"""What one round needs from the store, read in one worker-thread hop.

The read is not only a read: identities learned from the round's leads are merged into the store
first (so the round decides with them), and the orders the round may update are claimed
(fenced leases, one owner per deal across processes). Hence the name of the one function here,
:func:`merge_identities_and_claim`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from metrica_bridge.engine.leases import CLAIM_LEASE_S
from metrica_bridge.engine.work import Work
from metrica_bridge.events import DealStatusChanged, LeadCreated, PaymentReceived
from metrica_bridge.outcomes import Outcome
from metrica_bridge.steps import enrich
from metrica_bridge.steps.dedupe import Dedupe
from metrica_bridge.steps.dlq import is_replay
from metrica_bridge.store.base import (
    Claims,
    Identity,
    OrderState,
    Store,
    UploadIntent,
    order_intent_key,
)


@dataclass(slots=True)
class RoundState:
    """What one round read from the store."""

    previous: dict[str, Outcome]  # ledger id -> outcome already recorded
    identities: dict[str, Identity]  # merged from this round's leads, or loaded
    parked: set[str]  # deals with parked events
    claimed: set[str]  # deals this round may update
    orders: dict[str, OrderState]
    inflight: dict[str, UploadIntent]  # event id -> an earlier upload that carried it
    taken: set[str] = field(default_factory=set)  # by a work of this round already
    epochs: dict[str, int] = field(default_factory=dict)  # claimed deal -> its claim's epoch
    # claimed deal -> a crashed run's upload of its order, not settled yet (its intent id)
    unsettled: dict[str, str] = field(default_factory=dict)


def merge_identities_and_claim(
    store: Store,
    dedupe: Dedupe,
    batch: list[Work],
    known: dict[str, Outcome],
    missing: list[str],
    *,
    owner: str,
    unsettled_since: datetime | None,
) -> RoundState:
    """Everything the round needs (runs in a worker thread): outcomes already recorded, the
    identities of its clients (merged from its leads first), its deals' parked events, claims on
    the orders it may update and their states, and, when ``unsettled_since`` is given (a
    reconciler runs), the open upload intents of claimed events and of claimed orders: another
    process's upload of an order begun since then and never settled (:func:`unsettled`)."""
    previous = known | dedupe.recorded(missing)
    leads, merging, orders = _sort(batch, previous)
    identities = (
        store.merge_identities([enrich.identity_update(lead) for lead in merging])
        if merging
        else {}
    )
    wanted = {lead.client.uniq_id for lead in leads} | {client_of(w) for w in orders}
    wanted -= identities.keys()
    if wanted:
        identities.update(store.identities(wanted))
    live_deals = {deal_of(w) for w in orders if not w.released}
    parked = store.parked_deals(live_deals) if live_deals else set()
    claimed = _claim(store, owner, leads, orders, identities, parked)
    states = store.orders(claimed) if claimed else {}
    inflight: dict[str, UploadIntent] = {}
    orders_unsettled: dict[str, str] = {}
    if claimed and unsettled_since is not None:
        ids = [
            w.event.event_id
            for w in batch
            if w.event is not None and getattr(w.event, "deal_id", None) in claimed
        ]
        keys = {order_intent_key(deal): deal for deal in claimed}
        inflight = store.inflight([*ids, *keys])
        orders_unsettled = unsettled(
            {keys[k]: inflight.pop(k) for k in list(inflight) if k in keys},
            owner,
            unsettled_since,
        )
    return RoundState(
        previous,
        identities,
        parked,
        claimed,
        states,
        inflight,
        epochs=claimed.epochs,
        unsettled=orders_unsettled,
    )


def unsettled(intents: dict[str, UploadIntent], owner: str, since: datetime) -> dict[str, str]:
    """Orders another process began uploading since ``since`` and never settled: it crashed (or
    its claim lapsed) between Metrica's answer and recording it, so the order's stored state may
    lack what that upload applied. Deciding from it now would send a state Metrica then shows
    instead (the long chaos run: a deal's amount uploaded by a killed process, then a payment
    decided without it, and the revenue stayed wrong). Such an order waits until the event that
    upload carried is handled again and reconciled, at most until the upload is older than
    ``since`` (then its events were handled, or will never be, and waiting helps no one)."""
    return {
        deal: intent.intent_id
        for deal, intent in intents.items()
        if not intent.resolved and intent.owner != owner and intent.started_at >= since
    }


def _sort(
    batch: list[Work], previous: dict[str, Outcome]
) -> tuple[list[LeadCreated], list[LeadCreated], list[Work]]:
    """The round's leads, the leads whose identifiers are merged now, and its order events;
    repeats, poison and expired events need nothing from the store."""
    leads: list[LeadCreated] = []
    merging: list[LeadCreated] = []
    orders: list[Work] = []
    for work in batch:
        event = work.event
        if event is None or work.expired or is_repeat(work, previous.get(work.ledger_id)):
            continue
        if isinstance(event, LeadCreated):
            leads.append(event)
            # A lead leaving the park was merged when it parked; merging it again would bring
            # back its consent over a newer lead's.
            if not work.released:
                merging.append(event)
        else:
            orders.append(work)
    return leads, merging, orders


def _claim(
    store: Store,
    owner: str,
    leads: list[LeadCreated],
    orders: list[Work],
    identities: dict[str, Identity],
    parked: set[str],
) -> Claims:
    """Claims on the orders this round may update: a lead's deal and an order event's deal, for
    clients Metrica can bind, unless the event must wait behind the deal's parked events."""
    deals = [
        lead.deal_id
        for lead in leads
        if lead.deal_id is not None and bindable(identities.get(lead.client.uniq_id))
    ]
    for work in orders:
        deal = deal_of(work)
        if bindable(identities.get(client_of(work))) and (work.released or deal not in parked):
            deals.append(deal)
    return store.claim_orders(deals, owner, CLAIM_LEASE_S) if deals else Claims()


def is_repeat(work: Work, previous: Outcome | None) -> bool:
    """Seen before, and not coming back the ways an event may come back: a DLQ replay is the one
    way back for a dead-lettered event, and a parked event leaving the park is that same event,
    not a duplicate of itself."""
    if previous is None:
        return False
    if previous == Outcome.DEAD_LETTERED and is_replay(work.source):
        return False
    return not (previous == Outcome.PARKED and work.released)


def bindable(identity: Identity | None) -> bool:
    return identity is not None and identity.has_identifier()


def deal_of(work: Work) -> str:
    event = work.event
    assert isinstance(event, DealStatusChanged | PaymentReceived)
    return event.deal_id


def client_of(work: Work) -> str:
    event = work.event
    assert isinstance(event, DealStatusChanged | PaymentReceived)
    return event.client_uniq_id
