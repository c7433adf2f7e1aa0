"""What each event makes of the order Metrica holds: stale protection, no-op detection, the
status map, revenue, currency, the client the order belongs to, its creation time, and the
binding windows. Pure functions of (order state, event, status map, now).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from metrica_bridge.events import DealStatusChanged, LeadCreated, PaymentReceived
from metrica_bridge.metrica.records import OrderRecord
from metrica_bridge.metrica.status_map import MetricaStatus, StatusMap
from metrica_bridge.outcomes import Outcome
from metrica_bridge.store.base import OrderState

BIND_WINDOW = timedelta(days=21)  # orders created earlier never bind to visits
UPDATE_WINDOW = timedelta(days=111)  # a bound order can change this long after its visit


@dataclass(frozen=True, slots=True)
class Skip:
    """Nothing to send. ``outcome`` is ``Outcome.STALE`` or ``Outcome.SKIPPED``; ``state`` is
    what to persist anyway (a stale payment still counts towards revenue), or None."""

    outcome: Outcome
    reason: str
    state: OrderState | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    """The order cannot be sent yet: its creation time is not known (a payment came before
    anything that carries the deal's creation time). The event waits in the park."""

    reason: str


@dataclass(frozen=True, slots=True)
class Invalid:
    """The event contradicts the order (a payment in another currency): dead-letter it as
    ``invalid_event`` with this reason; the order is left as it is."""

    reason: str


@dataclass(frozen=True, slots=True)
class Send:
    state: OrderState  # what Metrica holds once this record is acknowledged
    record: OrderRecord
    windows: tuple[str, ...] = field(default=())  # binding windows this order is outside of
    # decisions taken by a rule rather than by data, for the metrics: "created_at_from_payment"
    # (the deal's creation time never came), "currency_ignored" (a status named another currency
    # without an amount in it)
    rules: tuple[str, ...] = field(default=())


Verdict = Send | Skip | Wait | Invalid
Decider = Callable[[OrderState | None], Verdict]

DEFAULT_CURRENCY = "RUB"  # DESIGN.md §2: an amount without a currency is in rubles
# The largest amount the schema carries (decimal, precision 18, scale 2); a revenue summed from
# payments beyond it cannot be sent or stored.
MAX_AMOUNT = Decimal("9999999999999999.99")


def _order_key(at: datetime | None, version: int | None) -> tuple[datetime, int] | None:
    return None if at is None else (at, -1 if version is None else version)


def is_stale(order: OrderState | None, at: datetime, version: int | None) -> bool:
    """Older (occurred_at, then version) than the update already applied to the order."""
    if order is None or order.applied_at is None:
        return False
    applied = _order_key(order.applied_at, order.applied_version)
    assert applied is not None
    return (at, -1 if version is None else version) < applied


def _windows(state: OrderState, now: datetime, new: bool) -> tuple[str, ...]:
    created = state.created_at
    if created is None:
        return ()
    if new and now - created > BIND_WINDOW:
        return ("create_21d",)
    if not new and now - created > UPDATE_WINDOW:
        return ("update_111d",)
    return ()


def _revenue(state: OrderState) -> Decimal | None:
    if state.deal_amount is not None:
        return state.deal_amount
    if state.payments:
        return sum(state.payments.values(), Decimal(0))
    return None


def _decide(
    old: OrderState | None,
    new: OrderState,
    status: MetricaStatus,
    at: datetime,
    now: datetime,
    products: dict[str, int] | None = None,
) -> Send | Skip:
    new = replace(new, status=status.id, revenue=_revenue(new))
    if (
        old is not None
        and old.sent
        and (old.client_uniq_id, old.status, old.revenue, old.cost, old.currency)
        == (new.client_uniq_id, new.status, new.revenue, new.cost, new.currency)
        and not products
    ):
        return Skip(Outcome.SKIPPED, "no-op: Metrica already holds this", replace(new, sent=True))
    assert new.created_at is not None
    record = OrderRecord(
        id=new.deal_id,
        client_uniq_id=new.client_uniq_id,
        create_date_time=new.created_at,
        order_status=status.id,
        update_date_time=max(at, new.created_at),
        revenue=new.revenue,
        cost=new.cost,
        currency=new.currency,
        products=products or {},
    )
    windows = _windows(new, now, new=old is None or not old.sent)
    return Send(replace(new, sent=True), record, windows)


def _restate(old: OrderState, new: OrderState, now: datetime) -> Send | Skip:
    """A stale event that changes the revenue: resend the order with the status Metrica already
    holds (never the event's older one) and the new revenue; the applied (occurred_at, version)
    stays that of the newer update. Unchanged revenue, or an order not in Metrica yet: stale."""
    revenue = _revenue(new)
    if not old.sent or old.status is None or revenue == old.revenue:
        return Skip(Outcome.STALE, "older than the update already applied", new)
    new = replace(new, revenue=revenue)
    assert new.created_at is not None
    record = OrderRecord(
        id=new.deal_id,
        client_uniq_id=new.client_uniq_id,
        create_date_time=new.created_at,
        order_status=old.status,
        update_date_time=max(old.applied_at or new.created_at, new.created_at),
        revenue=new.revenue,
        cost=new.cost,
        currency=new.currency,
    )
    return Send(new, record, _windows(new, now, new=False))


def _base(
    order: OrderState | None, deal_id: str, client: str, created: datetime | None
) -> OrderState:
    """The order as a newer (not stale) event sees it. It belongs to the client this event names:
    Metrica re-links an order whose ``id`` comes with another ``client_uniq_id``."""
    if order is None:
        return OrderState(deal_id=deal_id, client_uniq_id=client, created_at=created)
    if order.client_uniq_id != client:
        order = replace(order, client_uniq_id=client)
    # create_date_time is immutable in Metrica: once known, the first value stays.
    return order if order.created_at is not None else replace(order, created_at=created)


def _holds_money(order: OrderState) -> bool:
    return order.deal_amount is not None or bool(order.payments)


def _status_currency(order: OrderState, event: DealStatusChanged) -> tuple[str | None, bool]:
    """The order's currency after a status event, and whether the event's currency was ignored.
    A currency the event names is the CRM's word on the deal when the event carries the amount in
    it, or when the order holds no amount yet; an amount cannot change currency without a new
    amount, so otherwise the order keeps its own. An event that names none changes nothing."""
    named = event.currency
    if named is None or named == order.currency:
        if order.currency is None and event.revenue is not None:
            return DEFAULT_CURRENCY, False
        return order.currency, False
    if event.revenue is not None or not _holds_money(order):
        return named, False
    return order.currency or DEFAULT_CURRENCY, True


def on_lead(
    order: OrderState | None, event: LeadCreated, statuses: StatusMap, now: datetime
) -> Send | Skip:
    assert event.deal_id is not None
    if order is not None and order.sent:
        # The deal is already in Metrica (its status events came first): the lead's initial
        # status would regress it.
        return Skip(Outcome.STALE, "order already created")
    base = _base(order, event.deal_id, event.client.uniq_id, event.occurred_at)
    state = replace(base, applied_at=event.occurred_at, applied_version=None)
    return _decide(order, state, statuses.initial, event.occurred_at, now)


def on_status(
    order: OrderState | None, event: DealStatusChanged, statuses: StatusMap, now: datetime
) -> Send | Skip:
    status = statuses.translate(event.status)
    if status is None:
        return Skip(Outcome.SKIPPED, "unmapped status")
    if is_stale(order, event.occurred_at, event.version):
        assert order is not None
        if event.revenue is not None and order.deal_amount is None:
            # The deal's amount is news even from an old event: revenue is the deal amount
            # whenever a status change carried it.
            return _restate(order, replace(order, deal_amount=event.revenue), now)
        return Skip(Outcome.STALE, "older than the update already applied")
    base = _base(order, event.deal_id, event.client_uniq_id, event.deal_created_at)
    currency, ignored = _status_currency(base, event)
    state = replace(
        base,
        applied_at=event.occurred_at,
        applied_version=event.version,
        deal_amount=event.revenue if event.revenue is not None else base.deal_amount,
        cost=event.cost if event.cost is not None else base.cost,
        currency=currency,
    )
    products = {p.sku: p.quantity for p in event.products}
    verdict = _decide(order, state, status, event.occurred_at, now, products)
    if ignored and isinstance(verdict, Send):
        return replace(verdict, rules=("currency_ignored",))
    return verdict


def on_payment(
    order: OrderState | None,
    event: PaymentReceived,
    statuses: StatusMap,
    now: datetime,
    *,
    creation_waited: bool = False,
    deal_created_at: datetime | None = None,
) -> Verdict:
    """``creation_waited``: the event waited its whole time in the park for the deal's creation
    time; the order is then created at the payment's time (the latest the deal can have been
    created), counted as decided by rule. ``deal_created_at``: the deal's creation time as a
    later event of the deal, parked behind this one, names it (issue 16, item 13: without it,
    that later event went first and the order showed its payment alone)."""
    if order is not None and event.payment_id in order.payments:
        return Skip(Outcome.SKIPPED, "payment already counted")
    known = order.currency if order is not None else None
    if known is not None and event.currency != known:
        # An order has one currency (DESIGN.md §3): adding amounts in two would be a revenue
        # no CRM figure matches. The event goes to the DLQ, visible, replayable once fixed.
        return Invalid(f"payment in {event.currency} for an order in {known}")
    rules: tuple[str, ...] = ()
    created = (
        event.deal_created_at
        or (order.created_at if order is not None else None)
        or deal_created_at
    )
    if created is None:
        if not creation_waited:
            return Wait("the deal's creation time is not known yet")
        created, rules = event.occurred_at, ("created_at_from_payment",)
    stale = is_stale(order, event.occurred_at, None)
    # A stale event counts its money but does not take the order to the client it names.
    client = order.client_uniq_id if stale and order is not None else event.client_uniq_id
    base = _base(order, event.deal_id, client, created)
    counted = replace(
        base,
        payments={**base.payments, event.payment_id: event.amount},
        currency=event.currency,
    )
    if sum(counted.payments.values(), Decimal(0)) > MAX_AMOUNT:
        return Invalid("the deal's payments add up to more than the schema's precision")
    verdict: Send | Skip
    if stale:
        # Never regress the status, but the money was received: Metrica's revenue must add it
        # even when no later update of the deal ever comes.
        assert order is not None
        verdict = _restate(order, counted, now)
    else:
        state = replace(counted, applied_at=event.occurred_at, applied_version=None)
        verdict = _decide(order, state, statuses.paid, event.occurred_at, now)
    return replace(verdict, rules=rules) if rules and isinstance(verdict, Send) else verdict
