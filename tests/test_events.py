"""parse_event: valid records become typed events; contract violations are InvalidEvent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from metrica_bridge import events
from metrica_bridge.events import (
    DealStatusChanged,
    EventKind,
    InvalidEvent,
    LeadCreated,
    PaymentReceived,
    parse_event,
)
from tests.codec.records import DEAL, LEAD, PAYMENT, RECORDS

PII = ["79995551111", "+7 (999) 555-11-11", "mail@yandex.ru", "Mail@Yandex.RU", "Иван Петров"]


def _lead(**changes: Any) -> dict[str, Any]:
    record = {
        **RECORDS[LEAD][0],
        "client": {
            "uniq_id": "C-42",
            "name": "Иван Петров",
            "phones": ["+7 (999) 555-11-11"],
            "emails": [" Mail@Yandex.RU "],
        },
    }
    return {**record, **changes}


def _deal(**changes: Any) -> dict[str, Any]:
    return {**RECORDS[DEAL][0], **changes}


def _payment(**changes: Any) -> dict[str, Any]:
    return {**RECORDS[PAYMENT][0], **changes}


def _invalid(schema_name: str, record: dict[str, Any]) -> str:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(schema_name, record)
    reason = caught.value.reason
    assert str(caught.value) == reason
    for value in PII:
        assert value not in reason
    # No chained pydantic error (which quotes input values) in a logged traceback.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    return reason


def test_lead_is_normalised() -> None:
    event = parse_event(
        LEAD,
        _lead(
            client={
                "uniq_id": " C-42 ",
                "name": "Иван Петров",
                "phones": ["+7 (999) 555-11-11", "8 999 555 11 11", "+1 650 253 0000"],
                "emails": [" Mail@Yandex.RU ", "mail@yandex.ru"],
            },
            metrica_client_id=" 1712345678901234567 ",
        ),
    )
    assert isinstance(event, LeadCreated)
    assert event.kind is EventKind.LEAD_CREATED
    assert event.key == "L-1001"
    assert event.client.uniq_id == "C-42"
    assert event.client.phones == ("79995551111", "16502530000")
    assert event.client.emails == ("mail@yandex.ru",)
    assert event.client_ids == ("1712345678901234567",)
    assert event.dropped_identifiers == 0  # duplicates are merged, not dropped
    assert event.utm is not None
    assert event.utm.source == "yandex"
    assert event.consent is True


def test_unusable_identifiers_are_dropped_and_counted() -> None:
    event = parse_event(
        LEAD,
        _lead(
            client={
                "uniq_id": "C-42",
                "phones": ["нет", "8 999 555 11 11", "555-11-11"],
                "emails": ["mail@", " Mail@Yandex.RU "],
            },
            metrica_client_id="1.7e18",
        ),
    )
    assert isinstance(event, LeadCreated)
    assert event.client.phones == ("79995551111",)
    assert event.client.emails == ("mail@yandex.ru",)
    assert event.client.dropped_identifiers == 3
    assert event.client_ids == ()
    assert event.dropped_client_ids == 1
    assert event.dropped_identifiers == 4


def test_a_non_latin_email_costs_that_email_only() -> None:
    """Metrica takes Latin emails only: a Cyrillic address in the contact would have it refused
    whole, ClientIDs included, and every order of the client with it."""
    event = parse_event(
        LEAD,
        _lead(
            client={
                "uniq_id": "C-43",
                "phones": ["80291234567"],  # Belarusian national format, region RU: not a phone
                "emails": ["иван@почта.рф", "Ivan@Почта.рф"],
            },
        ),
    )
    assert isinstance(event, LeadCreated)
    assert event.client.emails == ("ivan@xn--80a1acny.xn--p1ai",)
    assert event.client.phones == ()
    assert event.client.dropped_identifiers == 2
    assert event.client_ids  # the ClientID, and with it the attribution, stays


@pytest.mark.parametrize("blank", [None, "", "   "])
def test_a_missing_client_id_is_not_a_dropped_one(blank: str | None) -> None:
    event = parse_event(LEAD, _lead(metrica_client_id=blank))
    assert isinstance(event, LeadCreated)
    assert event.client_ids == ()
    assert event.dropped_identifiers == 0


def test_revalidating_a_parsed_event_keeps_it_unchanged() -> None:
    event = parse_event(
        LEAD, _lead(metrica_client_id="abc", client={"uniq_id": "C", "phones": ["x"]})
    )
    assert isinstance(event, LeadCreated)
    again = LeadCreated.model_validate(event.model_dump())
    assert again == event
    assert again.dropped_identifiers == 2


def test_deal_status_changed() -> None:
    event = parse_event(DEAL, _deal(currency=None))
    assert isinstance(event, DealStatusChanged)
    assert event.kind is EventKind.DEAL_STATUS_CHANGED
    assert event.key == "D-2001"
    # Absent is not news: the order keeps its currency (an absent one renders as RUB).
    assert event.currency is None
    assert event.revenue == Decimal("125000.50")
    assert [(p.sku, p.quantity) for p in event.products] == [("SOFA-1", 1), ("PILLOW-Ж", 4)]
    assert event.version == 7
    assert event.deal_created_at == datetime(2024, 5, 17, 9, 30, 12, 345000, tzinfo=UTC)


def test_payment_received() -> None:
    event = parse_event(PAYMENT, _payment(currency=" usd ", deal_created_at=None))
    assert isinstance(event, PaymentReceived)
    assert event.kind is EventKind.PAYMENT_RECEIVED
    assert event.key == "D-2001"
    assert event.currency == "USD"
    assert event.amount == Decimal("9999999999999999.99")
    assert event.deal_created_at is None


def test_times_are_utc() -> None:
    moscow = timezone(timedelta(hours=3))
    event = parse_event(PAYMENT, _payment(occurred_at=datetime(2024, 5, 1, 12, 0, tzinfo=moscow)))
    assert event.occurred_at == datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)
    naive = parse_event(PAYMENT, _payment(occurred_at=datetime(2024, 5, 1, 12, 0)))
    assert naive.occurred_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    epoch = parse_event(PAYMENT, _payment(occurred_at=datetime(1970, 1, 1, tzinfo=UTC)))
    assert epoch.occurred_at.year == 1970


@pytest.mark.parametrize(
    ("schema_name", "record", "expected"),
    [
        (LEAD, _lead(event_id=""), "event_id: string_too_short"),
        (LEAD, _lead(event_id="   "), "event_id: string_too_short"),
        (LEAD, _lead(lead_id=""), "lead_id: string_too_short"),
        (LEAD, _lead(deal_id=""), "deal_id: string_too_short"),
        (
            LEAD,
            _lead(client={"uniq_id": " ", "phones": ["79995551111"], "emails": ["mail@yandex.ru"]}),
            "client.uniq_id: string_too_short",
        ),
        (LEAD, _lead(event_id="x" * 256), "event_id: string_too_long"),
        (
            LEAD,
            _lead(occurred_at=datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
            "occurred_at: value_error",
        ),
        (DEAL, _deal(deal_id=""), "deal_id: string_too_short"),
        (DEAL, _deal(client_uniq_id=""), "client_uniq_id: string_too_short"),
        (DEAL, _deal(status=""), "status: string_too_short"),
        (DEAL, _deal(revenue=Decimal("-1.00")), "revenue: greater_than_equal"),
        (DEAL, _deal(cost=Decimal("-0.01")), "cost: greater_than_equal"),
        (DEAL, _deal(currency="RUBL"), "currency: value_error"),
        (DEAL, _deal(currency="₽"), "currency: value_error"),
        (
            DEAL,
            _deal(deal_created_at=datetime(1900, 1, 1, tzinfo=UTC)),
            "deal_created_at: value_error",
        ),
        (DEAL, _deal(products=[{"sku": "", "quantity": 1}]), "products.0.sku: string_too_short"),
        (
            DEAL,
            _deal(products=[{"sku": "A", "quantity": -1}]),
            "products.0.quantity: greater_than_equal",
        ),
        (PAYMENT, _payment(amount=Decimal("-100.00")), "amount: greater_than_equal"),
        (PAYMENT, _payment(amount=Decimal("0.001")), "amount: decimal_max_places"),
        (PAYMENT, _payment(currency="12$"), "currency: value_error"),
        (PAYMENT, _payment(payment_id=""), "payment_id: string_too_short"),
        (
            PAYMENT,
            _payment(occurred_at=datetime(1969, 7, 20, tzinfo=UTC)),
            "occurred_at: value_error",
        ),
        (
            PAYMENT,
            _payment(deal_created_at=datetime(1960, 1, 1, tzinfo=UTC)),
            "deal_created_at: value_error",
        ),
    ],
)
def test_contract_violations(schema_name: str, record: dict[str, Any], expected: str) -> None:
    reason = _invalid(schema_name, record)
    assert expected in reason
    assert reason.startswith(f"{schema_name.rsplit('.', 1)[1]} violates the contract: ")


def test_every_violation_is_listed_without_values() -> None:
    reason = _invalid(
        LEAD,
        _lead(event_id="", lead_id="", occurred_at=datetime(1950, 1, 1, tzinfo=UTC)),
    )
    assert reason == (
        "LeadCreated violates the contract: event_id: string_too_short; "
        "lead_id: string_too_short; occurred_at: value_error"
    )


def test_missing_required_fields() -> None:
    reason = _invalid(DEAL, {"event_id": "e"})
    for field in ("occurred_at", "deal_id", "client_uniq_id", "deal_created_at", "status"):
        assert f"{field}: missing" in reason


def test_unknown_record_type() -> None:
    assert "unknown record type" in _invalid("crm.events.Refund", _payment())


def test_expected_kind() -> None:
    deal = parse_event(DEAL, _deal())
    assert events.expected_kind(deal, EventKind.DEAL_STATUS_CHANGED)
    with pytest.raises(InvalidEvent, match="deal-status-changed record on the lead-created topic"):
        events.expected_kind(deal, EventKind.LEAD_CREATED)


def test_schema_files_cover_every_event_type() -> None:
    assert set(events.SCHEMA_FILES) == set(events.EVENT_TYPES)


# -- issue 16: hostile input ---------------------------------------------------------------------
FUTURE = datetime(3000, 1, 1, tzinfo=UTC)
LAST_HOURS = datetime(9999, 12, 31, 22, 0, tzinfo=UTC)  # OverflowError in the counter's zone


@pytest.mark.parametrize(
    ("schema_name", "record", "expected"),
    [
        (LEAD, _lead(event_id="e\x00"), "event_id: control_character"),
        (
            LEAD,
            _lead(client={"uniq_id": "C1", "name": "Ив\x00ан", "phones": [], "emails": []}),
            "client.name: control_character",
        ),
        (
            LEAD,
            _lead(client={"uniq_id": "C1", "phones": ["+7999\x1b5551111"], "emails": []}),
            "client.phones.0: control_character",
        ),
        (LEAD, _lead(yclid="1\x85"), "yclid: control_character"),  # C1 too (NEL)
        (DEAL, _deal(status="won\n"), "status: control_character"),
        (PAYMENT, _payment(payment_id="P\x7f"), "payment_id: control_character"),
        (LEAD, _lead(yclid="1" * (events.MAX_TEXT + 1)), "yclid: string_too_long"),
        (
            LEAD,
            _lead(client={"uniq_id": "C1", "phones": ["1"] * (events.MAX_ITEMS + 1)}),
            "client.phones: too_long",
        ),
        (LEAD, _lead(occurred_at=LAST_HOURS), "occurred_at: value_error"),
        (DEAL, _deal(occurred_at=FUTURE), "occurred_at: value_error"),
        (DEAL, _deal(deal_created_at=FUTURE), "deal_created_at: value_error"),
        (PAYMENT, _payment(deal_created_at=LAST_HOURS), "deal_created_at: value_error"),
        (PAYMENT, _payment(amount=Decimal("10000000000000000.00")), "amount: decimal_whole_digits"),
        (DEAL, _deal(currency="new"), "currency: value_error"),
        (DEAL, _deal(currency="ABC"), "currency: value_error"),
        (PAYMENT, _payment(currency="XXX"), "currency: value_error"),
    ],
)
def test_hostile_values_are_invalid(
    schema_name: str, record: dict[str, Any], expected: str
) -> None:
    assert expected in _invalid(schema_name, record)


def test_times_up_to_the_allowed_skew_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "_max_skew", events._max_skew)  # restored after the test
    soon = datetime.now(UTC) + timedelta(minutes=30)
    assert parse_event(DEAL, _deal(occurred_at=soon, deal_created_at=soon)).occurred_at == soon
    events.set_max_clock_skew(60)
    assert "occurred_at: value_error" in _invalid(DEAL, _deal(occurred_at=soon))
    assert "deal_created_at: value_error" in _invalid(DEAL, _deal(deal_created_at=soon))


def test_iso_currencies_pass_in_any_case() -> None:
    assert parse_event(DEAL, _deal(currency="usd")).currency == "USD"
    assert parse_event(PAYMENT, _payment(currency="KZT")).currency == "KZT"
