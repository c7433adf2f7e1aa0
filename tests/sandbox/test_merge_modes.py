"""merge_mode semantics (metrica-api.md §4): stored ``1,2`` + sent ``1,3``."""

from __future__ import annotations

import httpx
import pytest

from metrica_bridge.sandbox import SandboxServer
from tests.sandbox.conftest import COUNTER, order

E1, E2, E3 = "one@example.com", "two@example.com", "three@example.com"


@pytest.mark.parametrize(
    ("mode", "emails", "name"),
    [
        ("SAVE", [E1, E3], None),  # replaced: fields not sent become null
        ("UPDATE", [E1, E3], "Иванов"),  # only the fields sent change
        ("APPEND", [E1, E2, E3], "Иванов"),  # values added to multi-valued fields
    ],
)
def test_contact_merge_modes(
    sb: SandboxServer, api: httpx.Client, mode: str, emails: list[str], name: str | None
) -> None:
    stored = {
        "uniq_id": "c1",
        "name": "Иванов",
        "emails": [E1, E2],
        "create_date_time": "2025-03-01 10:15:00",
    }
    untouched = {"uniq_id": "c2", "emails": [E2]}
    api.post("/data/contacts/json?merge_mode=SAVE", json={"contacts": [stored, untouched]})

    response = api.post(
        f"/data/contacts/json?merge_mode={mode}",
        json={"contacts": [{"uniq_id": "c1", "emails": [E1, E3]}]},
    )

    assert response.status_code == 200
    contacts = {c["uniq_id"]: c for c in sb.contacts(COUNTER)}
    assert contacts["c1"]["emails"] == emails
    assert contacts["c1"].get("name") == name
    assert contacts["c1"]["create_date_time"] == "2025-03-01 10:15:00"  # creation never changes
    assert contacts["c2"] == untouched  # records absent from the upload stay untouched


def test_contact_create_date_time_keeps_the_first_value(
    sb: SandboxServer, api: httpx.Client
) -> None:
    first = {"uniq_id": "c1", "create_date_time": "2025-03-01 10:15:00"}
    later = {"uniq_id": "c1", "create_date_time": "2025-04-01 10:15:00", "name": "N"}
    api.post("/data/contacts/json?merge_mode=SAVE", json={"contacts": [first]})
    assert (
        api.post("/data/contacts/json?merge_mode=UPDATE", json={"contacts": [later]}).status_code
        == 200
    )
    [contact] = sb.contacts(COUNTER)
    assert contact == {"uniq_id": "c1", "create_date_time": "2025-03-01 10:15:00", "name": "N"}


def test_update_with_null_clears_a_field(sb: SandboxServer, api: httpx.Client) -> None:
    api.post("/data/contacts/json?merge_mode=SAVE", json={"contacts": [{"uniq_id": "c1", "name": "N", "phones": ["79995551111"]}]})  # fmt: skip
    api.post("/data/contacts/json?merge_mode=UPDATE", json={"contacts": [{"uniq_id": "c1", "name": None}]})  # fmt: skip
    assert sb.contacts(COUNTER) == [{"uniq_id": "c1", "phones": ["79995551111"]}]


def test_append_to_a_field_not_stored_yet(sb: SandboxServer, api: httpx.Client) -> None:
    api.post("/data/contacts/json?merge_mode=SAVE", json={"contacts": [{"uniq_id": "c1"}]})
    api.post("/data/contacts/json?merge_mode=APPEND", json={"contacts": [{"uniq_id": "c1", "client_ids": [17]}]})  # fmt: skip
    api.post("/data/contacts/json?merge_mode=APPEND", json={"contacts": [{"uniq_id": "c1", "client_ids": ["17", 18]}]})  # fmt: skip
    assert sb.contacts(COUNTER)[0]["client_ids"] == ["17", "18"]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (
            "SAVE",
            {"goals": [{"goal_action_id": "g3"}], "products": {"apple": 3}, "revenue": None},
        ),
        (
            "UPDATE",
            {"goals": [{"goal_action_id": "g3"}], "products": {"apple": 3}, "revenue": 100},
        ),
        (
            "APPEND",
            {
                "goals": [{"goal_action_id": "g1"}, {"goal_action_id": "g3"}],
                "products": {"pear": 1, "apple": 3},
                "revenue": 100,
            },
        ),
    ],
)
def test_order_merge_modes(
    sb: SandboxServer, seeded: httpx.Client, mode: str, expected: dict[str, object]
) -> None:
    seeded.post(
        "/data/orders/json?merge_mode=SAVE",
        json={"orders": [
            order(revenue=100, goals=[{"goal_action_id": "g1"}], products={"pear": 1, "apple": 2}),
            order("deal-untouched"),
        ]},
    )  # fmt: skip

    response = seeded.post(
        f"/data/orders/json?merge_mode={mode}",
        json={"orders": [order(order_status="won", goals=[{"goal_action_id": "g1"}, {"goal_action_id": "g3"}] if mode == "APPEND" else [{"goal_action_id": "g3"}], products={"apple": 3})]},
    )  # fmt: skip

    assert response.status_code == 200, response.text
    orders = {o["id"]: o for o in sb.orders(COUNTER)}
    changed = orders["deal-1"]
    assert changed["order_status"] == "won"
    assert changed["goals"] == expected["goals"]
    assert changed["products"] == expected["products"]
    assert changed.get("revenue") == expected["revenue"]
    assert [h["order_status"] for h in orders["deal-untouched"]["history"]] == ["new"]


def test_paid_status_sets_finish_date_time_once(sb: SandboxServer, seeded: httpx.Client) -> None:
    seeded.post("/data/orders/json?merge_mode=SAVE", json={"orders": [order()]})
    assert "finish_date_time" not in sb.orders(COUNTER)[0]

    seeded.post("/data/orders/json?merge_mode=SAVE", json={"orders": [order(order_status="won")]})
    finished = sb.orders(COUNTER)[0]["finish_date_time"]
    seeded.post("/data/orders/json?merge_mode=SAVE", json={"orders": [order(order_status="won")]})

    assert sb.orders(COUNTER)[0]["finish_date_time"] == finished
    sent = order("deal-2", order_status="PAID", finish_date_time="2025-03-04 10:00:00")
    seeded.post("/data/orders/json?merge_mode=SAVE", json={"orders": [sent]})
    assert sb.orders(COUNTER)[1]["finish_date_time"] == "2025-03-04 10:00:00"
