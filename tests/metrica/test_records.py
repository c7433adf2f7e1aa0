from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from metrica_bridge.events import Product
from metrica_bridge.metrica.client import dumps
from metrica_bridge.metrica.records import ContactRecord, Goal, OrderRecord


def test_order_renders_metrica_json_in_counter_zone() -> None:
    order = OrderRecord(
        id="deal-1001",
        client_uniq_id="crm-contact-42",
        create_date_time=datetime(2025, 3, 2, 8, 0, tzinfo=UTC),
        update_date_time=datetime(2025, 3, 5, 9, 0, tzinfo=UTC),
        order_status="won",
        revenue=Decimal("5000.00"),
        cost=Decimal("4000.50"),
        currency="RUB",
        products=[
            Product(sku="pear", quantity=10),
            Product(sku="apple", quantity=30),
            Product(sku="pear", quantity=1),
        ],
        goals=(Goal(goal_action_id="good_lead", price=Decimal("123.5")), Goal(goal_action_id="g2")),
    )
    rendered = order.render("Europe/Moscow")
    assert rendered == {
        "id": "deal-1001",
        "client_uniq_id": "crm-contact-42",
        "client_type": "CONTACT",
        "create_date_time": "2025-03-02 11:00:00",
        "update_date_time": "2025-03-05 12:00:00",
        "order_status": "won",
        "revenue": 5000,
        "cost": 4000.5,
        "currency": "RUB",
        "products": {"pear": 11, "apple": 30},
        "goals": [{"goal_action_id": "good_lead", "price": 123.5}, {"goal_action_id": "g2"}],
    }
    assert json.loads(dumps({"orders": [rendered]}))["orders"][0] == rendered


def test_contact_renders_what_is_known_and_states_every_personal_list() -> None:
    contact = ContactRecord(
        uniq_id="c1",
        create_date_time=datetime(2025, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=5))),
        client_ids=("1712345678901234567", "1712345678901234567"),
        phones=("79995551111",),
    )
    assert contact.render("Europe/Moscow") == {
        "uniq_id": "c1",
        "create_date_time": "2024-12-31 22:00:00",
        "client_ids": ["1712345678901234567"],
        "phones": ["79995551111"],
        # Stated empty, so UPDATE empties what Metrica may hold (issue 15, item 7).
        "emails": [],
        "emails_md5": [],
        "phones_md5": [],
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"create_date_time": datetime(2025, 1, 1)},  # naive
        {"create_date_time": datetime(1969, 12, 31, tzinfo=UTC)},
        {"client_type": "COMPANY"},
        {"revenue": Decimal("-1")},
        {"products": {"x": -1}},
    ],
)
def test_order_rejects_what_metrica_would(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {
        "id": "d",
        "client_uniq_id": "c",
        "create_date_time": datetime(2025, 1, 1, tzinfo=UTC),
        "order_status": "new",
    }
    with pytest.raises(ValidationError):
        OrderRecord.model_validate({**base, **kwargs})


def test_client_ids_are_digit_strings() -> None:
    with pytest.raises(ValidationError):
        ContactRecord(uniq_id="c", client_ids=("1.7e18",))


def test_decimals_serialise_as_numbers() -> None:
    assert dumps({"revenue": Decimal("12.30"), "n": Decimal("7")}) == b'{"revenue":12.3,"n":7}'
    with pytest.raises(TypeError):
        dumps({"when": datetime.now(UTC)})
