"""The oracle's own rules, on hand-made deals: a wrong oracle would pass wrong runs."""

from __future__ import annotations

from decimal import Decimal

from tests.support.oracle import Deal, Identifiers


def _deal(*payments: str, amounts: tuple[str, ...] = ()) -> Deal:
    deal = Deal()
    deal.payments = [(f"p{i}", Decimal(a), f"e{i}") for i, a in enumerate(payments, start=1)]
    deal.amounts = {Decimal(a) for a in amounts}
    return deal


def test_payments_count_in_the_order_they_were_produced() -> None:
    deal = _deal("10.00", "20.00", "30.00")
    assert deal.revenues(set()) == {None, Decimal(10), Decimal(30), Decimal(60)}
    assert deal.final_revenue() == Decimal(60)


def test_a_dead_lettered_payment_lets_the_later_ones_count_without_it() -> None:
    deal = _deal("10.00", "20.00", "30.00")
    allowed = deal.revenues({"e1"})
    # The second payment alone (the example) only when the first was dead-lettered.
    assert Decimal(20) in allowed
    assert Decimal(20) not in deal.revenues(set())
    assert Decimal(50) in allowed
    assert Decimal(40) not in allowed


def test_a_deal_amount_is_the_revenue_whatever_was_paid() -> None:
    deal = _deal("10.00", amounts=("99.90",))
    assert Decimal("99.90") in deal.revenues(set())
    assert deal.final_revenue() == Decimal("99.90")


def test_a_contact_keeps_phones_and_emails_only_with_consent() -> None:
    told = Identifiers({"1"}, {"79990001122"}, {"a@b.ru"}, {True})
    assert told.expected() == ({"1"}, {"79990001122"}, {"a@b.ru"})
    told.consents = {False}
    assert told.expected() == ({"1"}, set(), set())
