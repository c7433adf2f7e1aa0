"""What becomes of one event, given what its round read: a verdict, no I/O.

:func:`decide` answers for every event of a round, in the round's order. It only reads the
round's state, except that a deal it lets an event update is marked taken for the rest of the
round (one update of an order at a time). The pipeline acts on the verdict: finishes the event,
dead-letters or parks it, backs it off while another worker holds its order, or goes on to the
contact and the order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from metrica_bridge.engine.round_read import RoundState, is_repeat
from metrica_bridge.engine.work import Work
from metrica_bridge.events import DealStatusChanged, LeadCreated, PaymentReceived
from metrica_bridge.metrica.status_map import StatusMap
from metrica_bridge.outcomes import ErrorClass, Outcome
from metrica_bridge.steps import order_rules as mapping
from metrica_bridge.store.base import WAITS_CREATION, WAITS_IDENTITY, Identity


@dataclass(frozen=True, slots=True)
class Duplicate:
    previous: Outcome  # the outcome recorded before


@dataclass(frozen=True, slots=True)
class DeadLetter:
    error_class: ErrorClass
    reason: str
    claim: str | None = None  # the deal claimed for it, to give back


@dataclass(frozen=True, slots=True)
class Park:
    """Wait in the park for the client's identity or the deal's creation time."""

    client: str
    deal: str
    version: int | None
    waits_for: str
    claim: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimBusy:
    """Another worker (here or in another process) is updating the order: wait our turn."""


@dataclass(frozen=True, slots=True)
class Unsettled:
    """A crashed run's upload of the order is not settled yet (``round_read.unsettled``): wait
    until the event it carried is handled again, so the order is decided from what it applied."""

    intent_id: str


@dataclass(frozen=True, slots=True)
class Go:
    """Make sure Metrica holds the client's contact; then, for an order event, the order."""

    identity: Identity
    claim: str | None = None  # the deal whose order this event updates
    order: mapping.Send | mapping.Skip | None = None


Verdict = Duplicate | DeadLetter | Park | ClaimBusy | Unsettled | Go


def decide(work: Work, state: RoundState, statuses: StatusMap, now: datetime) -> Verdict:
    previous = state.previous.get(work.ledger_id)
    if previous is not None and is_repeat(work, previous):
        return Duplicate(previous)
    if work.poison is not None:
        return DeadLetter(*work.poison)
    if work.expired is not None:
        return DeadLetter(ErrorClass.UNATTRIBUTABLE, work.expired)
    event = work.event
    assert event is not None
    if isinstance(event, LeadCreated):
        deal = event.deal_id
        identity = state.identities.get(event.client.uniq_id) or Identity(event.client.uniq_id)
        if deal is not None and not identity.has_identifier():
            # Orders go to Metrica only for clients it can bind: the lead waits like any other
            # order event of a client without an identifier.
            return Park(event.client.uniq_id, deal, None, WAITS_IDENTITY)
    else:
        found = state.identities.get(event.client_uniq_id)
        deal = event.deal_id
        # Behind parked events of the same deal, an event parks too, to keep the deal's order; a
        # released event is itself still in the park until it is recorded.
        if (
            found is None
            or not found.has_identifier()
            or (not work.released and deal in state.parked)
        ):
            version = event.version if isinstance(event, DealStatusChanged) else None
            return Park(event.client_uniq_id, deal, version, WAITS_IDENTITY)
        identity = found
    if deal is None:
        return Go(identity)
    return _order(work, deal, identity, state, statuses, now)


def _order(
    work: Work,
    deal: str,
    identity: Identity,
    state: RoundState,
    statuses: StatusMap,
    now: datetime,
) -> Verdict:
    """What the order becomes; the deal is taken for the rest of the round whatever it is."""
    if deal not in state.claimed or deal in state.taken:
        return ClaimBusy()
    waiting_for = state.unsettled.get(deal)
    carried = state.inflight.get(work.ledger_id)
    if waiting_for is not None and (carried is None or carried.intent_id != waiting_for):
        return Unsettled(waiting_for)
    state.taken.add(deal)
    event = work.event
    order = state.orders.get(deal)
    verdict: mapping.Verdict
    if isinstance(event, LeadCreated):
        verdict = mapping.on_lead(order, event, statuses, now)
    elif isinstance(event, DealStatusChanged):
        verdict = mapping.on_status(order, event, statuses, now)
    else:
        assert isinstance(event, PaymentReceived)
        verdict = mapping.on_payment(
            order,
            event,
            statuses,
            now,
            creation_waited=work.creation_waited,
            deal_created_at=work.deal_created_at,
        )
        if isinstance(verdict, mapping.Wait):
            return Park(event.client_uniq_id, deal, None, WAITS_CREATION, claim=deal)
    if isinstance(verdict, mapping.Invalid):
        return DeadLetter(ErrorClass.INVALID_EVENT, verdict.reason, claim=deal)
    assert not isinstance(verdict, mapping.Wait)
    return Go(identity, deal, verdict)
