"""Order rules: stale protection, no-ops, revenue, the status map, binding windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import yaml

from metrica_bridge.events import DealStatusChanged, LeadCreated, PaymentReceived
from metrica_bridge.metrica.status_map import parse_status_map
from metrica_bridge.outcomes import Outcome
from metrica_bridge.steps import order_rules
from metrica_bridge.store.base import OrderState
from tests.support.stack import STATUS_MAP

STATUSES = parse_status_map(yaml.safe_load(STATUS_MAP))
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
CREATED = NOW - timedelta(days=2)


def status(at: datetime, code: str, version: int | None = None, **kw: Any) -> DealStatusChanged:
    return DealStatusChanged(
        event_id=f"s-{at.timestamp()}-{version}",
        occurred_at=at,
        deal_id="D1",
        client_uniq_id="C1",
        deal_created_at=CREATED,
        status=code,
        version=version,
        **kw,
    )


def payment(
    at: datetime,
    pid: str,
    amount: str,
    created: datetime | None = CREATED,
    currency: str = "RUB",
    client: str = "C1",
) -> PaymentReceived:
    return PaymentReceived(
        event_id=f"p-{pid}",
        occurred_at=at,
        payment_id=pid,
        deal_id="D1",
        client_uniq_id=client,
        amount=Decimal(amount),
        currency=currency,
        deal_created_at=created,
    )


def applied(verdict: order_rules.Verdict) -> OrderState:
    assert isinstance(verdict, order_rules.Send), verdict
    return verdict.state


def test_a_status_walk_then_an_older_update_is_stale() -> None:
    first = applied(order_rules.on_status(None, status(NOW, "qualified", 1), STATUSES, NOW))
    assert first.created_at == CREATED
    second = applied(
        order_rules.on_status(first, status(NOW + timedelta(minutes=1), "won", 2), STATUSES, NOW)
    )
    late = order_rules.on_status(
        second, status(NOW + timedelta(seconds=30), "lost", 3), STATUSES, NOW
    )
    assert isinstance(late, order_rules.Skip)
    assert late.outcome == Outcome.STALE
    # Same occurred_at: the version decides.
    lower = order_rules.on_status(
        second, status(NOW + timedelta(minutes=1), "lost", 1), STATUSES, NOW
    )
    assert isinstance(lower, order_rules.Skip)
    higher = order_rules.on_status(
        second, status(NOW + timedelta(minutes=1), "lost", 5), STATUSES, NOW
    )
    assert isinstance(higher, order_rules.Send)


def test_unmapped_status_is_skipped_and_no_op_is_not_sent() -> None:
    unmapped = order_rules.on_status(None, status(NOW, "weird"), STATUSES, NOW)
    assert isinstance(unmapped, order_rules.Skip)
    assert unmapped.reason == "unmapped status"
    first = applied(
        order_rules.on_status(None, status(NOW, "won", 1, revenue=Decimal(10)), STATUSES, NOW)
    )
    again = order_rules.on_status(
        first, status(NOW + timedelta(minutes=1), "won", 2, revenue=Decimal(10)), STATUSES, NOW
    )
    assert isinstance(again, order_rules.Skip)
    assert again.outcome == Outcome.SKIPPED
    assert again.state is not None
    assert again.state.applied_version == 2  # later stale checks compare with it


def test_create_date_time_never_changes() -> None:
    order = applied(order_rules.on_status(None, status(NOW, "new"), STATUSES, NOW))
    moved = status(NOW + timedelta(minutes=1), "won")
    moved = moved.model_copy(update={"deal_created_at": CREATED - timedelta(days=1)})
    verdict = order_rules.on_status(order, moved, STATUSES, NOW)
    assert isinstance(verdict, order_rules.Send)
    assert verdict.record.create_date_time == CREATED


def test_payments_add_up_unless_the_deal_amount_is_known_and_repeats_change_nothing() -> None:
    one = applied(order_rules.on_payment(None, payment(NOW, "P1", "100.50"), STATUSES, NOW))
    assert one.status == "won"
    assert one.revenue == Decimal("100.50")
    two = applied(
        order_rules.on_payment(one, payment(NOW + timedelta(minutes=1), "P2", "50"), STATUSES, NOW)
    )
    assert two.revenue == Decimal("150.50")
    repeat = order_rules.on_payment(
        two, payment(NOW + timedelta(minutes=2), "P2", "50"), STATUSES, NOW
    )
    assert isinstance(repeat, order_rules.Skip)
    known = applied(
        order_rules.on_status(
            two, status(NOW + timedelta(minutes=3), "won", 9, revenue=Decimal(999)), STATUSES, NOW
        )
    )
    assert known.revenue == Decimal(999)
    three = order_rules.on_payment(
        known, payment(NOW + timedelta(minutes=4), "P3", "1"), STATUSES, NOW
    )
    assert isinstance(three, order_rules.Skip)  # revenue stays the deal amount: nothing changed
    assert three.state is not None
    assert three.state.payments["P3"] == Decimal(1)


def test_a_stale_payment_still_counts_towards_revenue() -> None:
    later = applied(
        order_rules.on_status(None, status(NOW + timedelta(hours=1), "lost", 3), STATUSES, NOW)
    )
    # The status never goes back, but Metrica's revenue must include the money.
    stale = order_rules.on_payment(later, payment(NOW, "P1", "10"), STATUSES, NOW)
    assert isinstance(stale, order_rules.Send)
    assert stale.record.order_status == "lost"
    assert stale.record.revenue == Decimal(10)
    assert stale.state.status == "lost"
    assert (stale.state.applied_at, stale.state.applied_version) == (later.applied_at, 3)
    assert stale.state.payments == {"P1": Decimal(10)}
    # Revenue already the deal's amount: the stale payment changes nothing Metrica holds.
    known = applied(
        order_rules.on_status(
            None, status(NOW + timedelta(hours=1), "lost", 3, revenue=Decimal(5)), STATUSES, NOW
        )
    )
    counted = order_rules.on_payment(known, payment(NOW, "P1", "10"), STATUSES, NOW)
    assert isinstance(counted, order_rules.Skip)
    assert counted.outcome == Outcome.STALE
    assert counted.state is not None
    assert counted.state.payments == {"P1": Decimal(10)}


def test_a_stale_status_change_still_brings_the_deal_amount() -> None:
    later = applied(
        order_rules.on_status(None, status(NOW + timedelta(hours=1), "lost", 3), STATUSES, NOW)
    )
    stale = order_rules.on_status(
        later, status(NOW, "won", 1, revenue=Decimal("70.10")), STATUSES, NOW
    )
    assert isinstance(stale, order_rules.Send)
    assert stale.record.order_status == "lost"
    assert stale.record.revenue == Decimal("70.10")
    assert stale.state.applied_version == 3
    # Once the amount is known, an older one does not replace it.
    again = order_rules.on_status(
        stale.state, status(NOW, "won", 2, revenue=Decimal(1)), STATUSES, NOW
    )
    assert isinstance(again, order_rules.Skip)
    assert again.outcome == Outcome.STALE


def test_lead_creates_the_order_unless_it_exists() -> None:
    lead = LeadCreated(
        event_id="l1",
        occurred_at=NOW,
        lead_id="L1",
        deal_id="D1",
        client={"uniq_id": "C1"},
        metrica_client_id="123",
    )
    created = order_rules.on_lead(None, lead, STATUSES, NOW)
    assert isinstance(created, order_rules.Send)
    assert created.record.order_status == "new"
    existing = applied(order_rules.on_status(None, status(NOW, "won"), STATUSES, NOW))
    assert isinstance(order_rules.on_lead(existing, lead, STATUSES, NOW), order_rules.Skip)


def test_binding_windows_are_flagged() -> None:
    old = status(NOW, "new").model_copy(update={"deal_created_at": NOW - timedelta(days=30)})
    verdict = order_rules.on_status(None, old, STATUSES, NOW)
    assert isinstance(verdict, order_rules.Send)
    assert verdict.windows == ("create_21d",)
    ancient = OrderState("D1", "C1", created_at=NOW - timedelta(days=200), sent=True, status="new")
    update = order_rules.on_status(ancient, status(NOW, "won"), STATUSES, NOW)
    assert isinstance(update, order_rules.Send)
    assert update.windows == ("update_111d",)


# -- issue 15: creation time, re-linking, currency -----------------------------------------------


def test_a_payment_before_the_deals_creation_time_waits_instead_of_guessing() -> None:
    early = payment(NOW, "P1", "10", created=None)
    assert isinstance(order_rules.on_payment(None, early, STATUSES, NOW), order_rules.Wait)
    # Once a status (or lead) brought the creation time, the payment adds to that order.
    order = applied(
        order_rules.on_status(None, status(NOW - timedelta(hours=1), "won"), STATUSES, NOW)
    )
    counted = order_rules.on_payment(order, early, STATUSES, NOW)
    assert isinstance(counted, order_rules.Send)
    assert counted.record.create_date_time == CREATED
    assert counted.rules == ()


def test_a_payment_takes_the_creation_time_a_later_event_of_its_deal_named() -> None:
    """Issue 16, item 13: the park hands the creation time a later parked event names to the
    payment that waited for it, so the payment goes first, as it came."""
    early = payment(NOW, "P1", "10", created=None)
    verdict = order_rules.on_payment(None, early, STATUSES, NOW, deal_created_at=CREATED)
    assert isinstance(verdict, order_rules.Send)
    assert (verdict.record.create_date_time, verdict.rules) == (CREATED, ())
    # An order's own creation time stays whatever a parked event says (it is immutable).
    order = OrderState("D1", "C1", created_at=CREATED)
    later = order_rules.on_payment(order, early, STATUSES, NOW, deal_created_at=NOW)
    assert isinstance(later, order_rules.Send)
    assert later.record.create_date_time == CREATED


def test_after_its_whole_wait_a_payment_creates_the_order_by_rule() -> None:
    early = payment(NOW, "P1", "10", created=None)
    verdict = order_rules.on_payment(None, early, STATUSES, NOW, creation_waited=True)
    assert isinstance(verdict, order_rules.Send)
    assert verdict.record.create_date_time == NOW
    assert verdict.rules == ("created_at_from_payment",)
    # The creation time came after all, just as the wait ended: the known time wins.
    order = OrderState("D1", "C1", created_at=CREATED)
    known = order_rules.on_payment(order, early, STATUSES, NOW, creation_waited=True)
    assert isinstance(known, order_rules.Send)
    assert (known.record.create_date_time, known.rules) == (CREATED, ())


def test_a_deal_moved_to_another_client_is_relinked() -> None:
    first = applied(order_rules.on_status(None, status(NOW, "qualified", 1), STATUSES, NOW))
    moved = status(NOW + timedelta(minutes=1), "qualified", 2).model_copy(
        update={"client_uniq_id": "C2"}
    )
    # Same status, revenue and currency: only the client changed, and that is news to Metrica.
    verdict = order_rules.on_status(first, moved, STATUSES, NOW)
    assert isinstance(verdict, order_rules.Send)
    assert verdict.record.client_uniq_id == "C2"
    assert verdict.state.client_uniq_id == "C2"
    # A later payment naming the new client keeps it; a stale event naming the old one does not
    # take the order back.
    paid = order_rules.on_payment(
        verdict.state, payment(NOW + timedelta(minutes=2), "P1", "5", client="C2"), STATUSES, NOW
    )
    assert isinstance(paid, order_rules.Send)
    assert paid.record.client_uniq_id == "C2"
    old = status(NOW, "won", 1, revenue=Decimal(7))
    restated = order_rules.on_status(paid.state, old, STATUSES, NOW)
    assert isinstance(restated, order_rules.Send)
    assert restated.record.client_uniq_id == "C2"


def test_a_status_without_a_currency_keeps_the_orders() -> None:
    usd = applied(
        order_rules.on_status(None, status(NOW, "qualified", 1, currency="USD"), STATUSES, NOW)
    )
    assert usd.currency == "USD"
    later = order_rules.on_status(usd, status(NOW + timedelta(minutes=1), "won", 2), STATUSES, NOW)
    assert isinstance(later, order_rules.Send)
    assert later.record.currency == "USD"
    # No currency anywhere: an amount without a currency is in rubles (DESIGN.md §2).
    plain = order_rules.on_status(None, status(NOW, "won", 1, revenue=Decimal(3)), STATUSES, NOW)
    assert isinstance(plain, order_rules.Send)
    assert plain.record.currency == "RUB"


def test_a_currency_changes_only_with_an_amount_in_it() -> None:
    rub = applied(
        order_rules.on_status(None, status(NOW, "won", 1, revenue=Decimal(90)), STATUSES, NOW)
    )
    # Named without an amount: the order's amount is in rubles, so the rubles stay (by rule).
    named = status(NOW + timedelta(minutes=1), "won", 2, currency="EUR")
    kept = order_rules.on_status(rub, named, STATUSES, NOW)
    assert isinstance(kept, order_rules.Skip)  # nothing changed for Metrica
    assert kept.state is not None
    assert kept.state.currency == "RUB"
    cost = status(NOW + timedelta(minutes=1), "won", 2, currency="EUR", cost=Decimal(1))
    ruled = order_rules.on_status(rub, cost, STATUSES, NOW)
    assert isinstance(ruled, order_rules.Send)
    assert (ruled.record.currency, ruled.rules) == ("RUB", ("currency_ignored",))
    # With the amount in it, the CRM restated the deal: the new currency is the order's.
    restated = status(NOW + timedelta(minutes=2), "won", 3, currency="EUR", revenue=Decimal(1))
    moved = order_rules.on_status(rub, restated, STATUSES, NOW)
    assert isinstance(moved, order_rules.Send)
    assert (moved.record.currency, moved.record.revenue) == ("EUR", Decimal(1))


def test_a_payment_in_another_currency_is_invalid_and_never_added_up() -> None:
    first = applied(order_rules.on_payment(None, payment(NOW, "P1", "100"), STATUSES, NOW))
    other = payment(NOW + timedelta(minutes=1), "P2", "50", currency="USD")
    verdict = order_rules.on_payment(first, other, STATUSES, NOW)
    assert isinstance(verdict, order_rules.Invalid)
    assert verdict.reason == "payment in USD for an order in RUB"
    # The currency a status named first is the order's too.
    eur = applied(order_rules.on_status(None, status(NOW, "won", 1, currency="EUR"), STATUSES, NOW))
    assert isinstance(
        order_rules.on_payment(eur, payment(NOW, "P9", "1"), STATUSES, NOW), order_rules.Invalid
    )


def test_payments_adding_up_beyond_the_schemas_precision_are_invalid() -> None:
    """Issue 16: each payment fits decimal(18, 2), their sum does not; it must be a verdict, not
    an exception raised on every attempt."""
    at = NOW - timedelta(hours=1)
    first = applied(
        order_rules.on_payment(None, payment(at, "P1", "9999999999999999.99"), STATUSES, NOW)
    )
    verdict = order_rules.on_payment(first, payment(at, "P2", "0.01"), STATUSES, NOW)
    assert isinstance(verdict, order_rules.Invalid)
    assert "precision" in verdict.reason
