"""Map an event onto the order Metrica holds: stale protection, no-op detection, the status map,
revenue, and the binding windows. Pure functions of (order state, event, status map, now).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from metrica_bridge.events import DealStatusChanged, LeadCreated, PaymentReceived
from metrica_bridge.metrica.records import OrderRecord
from metrica_bridge.metrica.status_map import MetricaStatus, StatusMap
from metrica_bridge.store.base import OrderState

BIND_WINDOW = timedelta(days=21)  # orders created earlier never bind to visits
UPDATE_WINDOW = timedelta(days=111)  # a bound order can change this long after its visit


@dataclass(frozen=True, slots=True)
class Skip:
    """Nothing to send. ``outcome`` is ``stale`` or ``skipped``; ``state`` is what to persist
    anyway (a stale payment still counts towards revenue), or None."""

    outcome: str
    reason: str
    state: OrderState | None = None


@dataclass(frozen=True, slots=True)
class Send:
    state: OrderState  # what Metrica holds once this record is acknowledged
    record: OrderRecord
    windows: tuple[str, ...] = field(default=())  # binding windows this order is outside of


Decider = Callable[[OrderState | None], "Send | Skip"]


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
        and (old.status, old.revenue, old.cost, old.currency)
        == (new.status, new.revenue, new.cost, new.currency)
        and not products
    ):
        return Skip("skipped", "no-op: Metrica already holds this", replace(new, sent=True))
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
        return Skip("stale", "older than the update already applied", new)
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


def _base(order: OrderState | None, deal_id: str, client: str, created: datetime) -> OrderState:
    if order is not None:
        # create_date_time is immutable in Metrica: once sent, the first value stays.
        return order if order.created_at is not None else replace(order, created_at=created)
    return OrderState(deal_id=deal_id, client_uniq_id=client, created_at=created)


def on_lead(
    order: OrderState | None, event: LeadCreated, statuses: StatusMap, now: datetime
) -> Send | Skip:
    assert event.deal_id is not None
    if order is not None and order.sent:
        # The deal is already in Metrica (its status events came first): the lead's initial
        # status would regress it.
        return Skip("stale", "order already created")
    base = _base(order, event.deal_id, event.client.uniq_id, event.occurred_at)
    state = replace(base, applied_at=event.occurred_at, applied_version=None)
    return _decide(order, state, statuses.initial, event.occurred_at, now)


def on_status(
    order: OrderState | None, event: DealStatusChanged, statuses: StatusMap, now: datetime
) -> Send | Skip:
    status = statuses.translate(event.status)
    if status is None:
        return Skip("skipped", "unmapped status")
    if is_stale(order, event.occurred_at, event.version):
        assert order is not None
        if event.revenue is not None and order.deal_amount is None:
            # The deal's amount is news even from an old event: revenue is the deal amount
            # whenever a status change carried it.
            return _restate(order, replace(order, deal_amount=event.revenue), now)
        return Skip("stale", "older than the update already applied")
    base = _base(order, event.deal_id, event.client_uniq_id, event.deal_created_at)
    state = replace(
        base,
        applied_at=event.occurred_at,
        applied_version=event.version,
        deal_amount=event.revenue if event.revenue is not None else base.deal_amount,
        cost=event.cost if event.cost is not None else base.cost,
        currency=event.currency,
    )
    products = {p.sku: p.quantity for p in event.products}
    return _decide(order, state, status, event.occurred_at, now, products)


def on_payment(
    order: OrderState | None, event: PaymentReceived, statuses: StatusMap, now: datetime
) -> Send | Skip:
    if order is not None and event.payment_id in order.payments:
        return Skip("skipped", "payment already counted")
    created = event.deal_created_at or event.occurred_at
    base = _base(order, event.deal_id, event.client_uniq_id, created)
    counted = replace(
        base,
        payments={**base.payments, event.payment_id: event.amount},
        currency=base.currency or event.currency,
    )
    if is_stale(order, event.occurred_at, None):
        # Never regress the status, but the money was received: Metrica's revenue must add it
        # even when no later update of the deal ever comes.
        assert order is not None
        return _restate(order, counted, now)
    state = replace(counted, applied_at=event.occurred_at, applied_version=None)
    return _decide(order, state, statuses.paid, event.occurred_at, now)
