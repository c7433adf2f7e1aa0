"""Order mapping rules: stale protection, no-ops, revenue, the status map, binding windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import yaml

from metrica_bridge.events import DealStatusChanged, LeadCreated, PaymentReceived
from metrica_bridge.metrica.status_map import parse_status_map
from metrica_bridge.steps import map as mapping
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


def payment(at: datetime, pid: str, amount: str) -> PaymentReceived:
    return PaymentReceived(
        event_id=f"p-{pid}",
        occurred_at=at,
        payment_id=pid,
        deal_id="D1",
        client_uniq_id="C1",
        amount=Decimal(amount),
    )


def applied(verdict: mapping.Send | mapping.Skip) -> OrderState:
    assert isinstance(verdict, mapping.Send), verdict
    return verdict.state


def test_a_status_walk_then_an_older_update_is_stale() -> None:
    first = applied(mapping.on_status(None, status(NOW, "qualified", 1), STATUSES, NOW))
    assert first.created_at == CREATED
    second = applied(
        mapping.on_status(first, status(NOW + timedelta(minutes=1), "won", 2), STATUSES, NOW)
    )
    late = mapping.on_status(second, status(NOW + timedelta(seconds=30), "lost", 3), STATUSES, NOW)
    assert isinstance(late, mapping.Skip)
    assert late.outcome == "stale"
    # Same occurred_at: the version decides.
    lower = mapping.on_status(second, status(NOW + timedelta(minutes=1), "lost", 1), STATUSES, NOW)
    assert isinstance(lower, mapping.Skip)
    higher = mapping.on_status(second, status(NOW + timedelta(minutes=1), "lost", 5), STATUSES, NOW)
    assert isinstance(higher, mapping.Send)


def test_unmapped_status_is_skipped_and_no_op_is_not_sent() -> None:
    unmapped = mapping.on_status(None, status(NOW, "weird"), STATUSES, NOW)
    assert isinstance(unmapped, mapping.Skip)
    assert unmapped.reason == "unmapped status"
    first = applied(
        mapping.on_status(None, status(NOW, "won", 1, revenue=Decimal(10)), STATUSES, NOW)
    )
    again = mapping.on_status(
        first, status(NOW + timedelta(minutes=1), "won", 2, revenue=Decimal(10)), STATUSES, NOW
    )
    assert isinstance(again, mapping.Skip)
    assert again.outcome == "skipped"
    assert again.state is not None
    assert again.state.applied_version == 2  # later stale checks compare with it


def test_create_date_time_never_changes() -> None:
    order = applied(mapping.on_status(None, status(NOW, "new"), STATUSES, NOW))
    moved = status(NOW + timedelta(minutes=1), "won")
    moved = moved.model_copy(update={"deal_created_at": CREATED - timedelta(days=1)})
    verdict = mapping.on_status(order, moved, STATUSES, NOW)
    assert isinstance(verdict, mapping.Send)
    assert verdict.record.create_date_time == CREATED


def test_payments_add_up_unless_the_deal_amount_is_known_and_repeats_change_nothing() -> None:
    one = applied(mapping.on_payment(None, payment(NOW, "P1", "100.50"), STATUSES, NOW))
    assert one.status == "won"
    assert one.revenue == Decimal("100.50")
    two = applied(
        mapping.on_payment(one, payment(NOW + timedelta(minutes=1), "P2", "50"), STATUSES, NOW)
    )
    assert two.revenue == Decimal("150.50")
    repeat = mapping.on_payment(two, payment(NOW + timedelta(minutes=2), "P2", "50"), STATUSES, NOW)
    assert isinstance(repeat, mapping.Skip)
    known = applied(
        mapping.on_status(
            two, status(NOW + timedelta(minutes=3), "won", 9, revenue=Decimal(999)), STATUSES, NOW
        )
    )
    assert known.revenue == Decimal(999)
    three = mapping.on_payment(known, payment(NOW + timedelta(minutes=4), "P3", "1"), STATUSES, NOW)
    assert isinstance(three, mapping.Skip)  # revenue stays the deal amount: nothing changed
    assert three.state is not None
    assert three.state.payments["P3"] == Decimal(1)


def test_a_stale_payment_still_counts_towards_revenue() -> None:
    later = applied(
        mapping.on_status(None, status(NOW + timedelta(hours=1), "lost", 3), STATUSES, NOW)
    )
    # The status never goes back, but Metrica's revenue must include the money.
    stale = mapping.on_payment(later, payment(NOW, "P1", "10"), STATUSES, NOW)
    assert isinstance(stale, mapping.Send)
    assert stale.record.order_status == "lost"
    assert stale.record.revenue == Decimal(10)
    assert stale.state.status == "lost"
    assert (stale.state.applied_at, stale.state.applied_version) == (later.applied_at, 3)
    assert stale.state.payments == {"P1": Decimal(10)}
    # Revenue already the deal's amount: the stale payment changes nothing Metrica holds.
    known = applied(
        mapping.on_status(
            None, status(NOW + timedelta(hours=1), "lost", 3, revenue=Decimal(5)), STATUSES, NOW
        )
    )
    counted = mapping.on_payment(known, payment(NOW, "P1", "10"), STATUSES, NOW)
    assert isinstance(counted, mapping.Skip)
    assert counted.outcome == "stale"
    assert counted.state is not None
    assert counted.state.payments == {"P1": Decimal(10)}


def test_a_stale_status_change_still_brings_the_deal_amount() -> None:
    later = applied(
        mapping.on_status(None, status(NOW + timedelta(hours=1), "lost", 3), STATUSES, NOW)
    )
    stale = mapping.on_status(later, status(NOW, "won", 1, revenue=Decimal("70.10")), STATUSES, NOW)
    assert isinstance(stale, mapping.Send)
    assert stale.record.order_status == "lost"
    assert stale.record.revenue == Decimal("70.10")
    assert stale.state.applied_version == 3
    # Once the amount is known, an older one does not replace it.
    again = mapping.on_status(stale.state, status(NOW, "won", 2, revenue=Decimal(1)), STATUSES, NOW)
    assert isinstance(again, mapping.Skip)
    assert again.outcome == "stale"


def test_lead_creates_the_order_unless_it_exists() -> None:
    lead = LeadCreated(
        event_id="l1",
        occurred_at=NOW,
        lead_id="L1",
        deal_id="D1",
        client={"uniq_id": "C1"},
        metrica_client_id="123",
    )
    created = mapping.on_lead(None, lead, STATUSES, NOW)
    assert isinstance(created, mapping.Send)
    assert created.record.order_status == "new"
    existing = applied(mapping.on_status(None, status(NOW, "won"), STATUSES, NOW))
    assert isinstance(mapping.on_lead(existing, lead, STATUSES, NOW), mapping.Skip)


def test_binding_windows_are_flagged() -> None:
    old = status(NOW, "new").model_copy(update={"deal_created_at": NOW - timedelta(days=30)})
    verdict = mapping.on_status(None, old, STATUSES, NOW)
    assert isinstance(verdict, mapping.Send)
    assert verdict.windows == ("create_21d",)
    ancient = OrderState("D1", "C1", created_at=NOW - timedelta(days=200), sent=True, status="new")
    update = mapping.on_status(ancient, status(NOW, "won"), STATUSES, NOW)
    assert isinstance(update, mapping.Send)
    assert update.windows == ("update_111d",)
