"""The documented mistakes, each with its code, error_type and location (metrica-api.md)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from metrica_bridge.sandbox import SandboxServer
from tests.sandbox.conftest import (
    COUNTER,
    EXAMPLE_A,
    EXAMPLE_B,
    OTHER_COUNTER,
    TOKEN,
    error_of,
    example,
    order,
)

ORDERS = "/data/orders/json?merge_mode=SAVE"
CONTACTS = "/data/contacts/json?merge_mode=SAVE"


def test_missing_merge_mode(seeded: httpx.Client) -> None:
    response = seeded.post("/data/orders/json", json={"orders": [order()]})
    assert error_of(response) == (400, "missing_parameter", "merge_mode")


@pytest.mark.parametrize("mode", ["save", "REPLACE", ""])
def test_unknown_merge_mode(seeded: httpx.Client, mode: str) -> None:
    response = seeded.post(f"/data/contacts/json?merge_mode={mode}", json=example(EXAMPLE_A))
    assert error_of(response) == (400, "invalid_parameter", "merge_mode")


def test_camel_case_field(sb: SandboxServer, seeded: httpx.Client) -> None:
    row = order()
    row["clientUniqId"] = row.pop("client_uniq_id")

    response = seeded.post(ORDERS, json={"orders": [row]})

    assert response.status_code == 400
    errors = {e["location"]: e for e in response.json()["errors"]}
    assert errors["orders[0].clientUniqId"]["error_type"] == "invalid_parameter"
    assert "client_uniq_id" in errors["orders[0].clientUniqId"]["message"]
    assert errors["orders[0].client_uniq_id"]["error_type"] == "missing_parameter"
    assert sb.orders(COUNTER) == []


def test_unknown_contact_field(seeded: httpx.Client) -> None:
    body = example(EXAMPLE_A)
    body["contacts"][0]["clientIds"] = body["contacts"][0].pop("client_ids")
    assert error_of(seeded.post(CONTACTS, json=body)) == (
        400, "invalid_parameter", "contacts[0].clientIds",
    )  # fmt: skip


@pytest.mark.parametrize(
    "value",
    [
        "2025-03-02T11:00:00",
        "2025-03-02T11:00:00Z",
        "2025-03-02 11:00:00+03:00",
        "02.03.2025 11:00",
        "2025-03-02 11:00",
        "2025-02-30 11:00:00",
        "1969-12-31 23:59:59",
        1741000000,
    ],
)
def test_bad_dates(seeded: httpx.Client, value: Any) -> None:
    response = seeded.post(ORDERS, json={"orders": [order(create_date_time=value)]})
    assert error_of(response) == (400, "invalid_parameter", "orders[0].create_date_time")


def test_date_only_is_accepted(seeded: httpx.Client) -> None:
    response = seeded.post(ORDERS, json={"orders": [order(create_date_time="2025-03-02")]})
    assert response.status_code == 200, response.text


def test_changed_create_date_time(sb: SandboxServer, seeded: httpx.Client) -> None:
    assert seeded.post(ORDERS, json={"orders": [order()]}).status_code == 200
    for mode in ("SAVE", "UPDATE", "APPEND"):
        response = seeded.post(
            f"/data/orders/json?merge_mode={mode}",
            json={"orders": [order(create_date_time="2025-03-03 11:00:00", order_status="won")]},
        )
        assert error_of(response) == (400, "invalid_parameter", "orders[0].create_date_time")
    [stored] = sb.orders(COUNTER)
    assert stored["create_date_time"] == "2025-03-02 11:00:00"
    assert stored["order_status"] == "new"
    # The same instant written as a bare date is not a change.
    seeded.post(ORDERS, json={"orders": [order("deal-2", create_date_time="2025-03-02")]})
    again = seeded.post(ORDERS, json={"orders": [order("deal-2", create_date_time="2025-03-02 00:00:00")]})  # fmt: skip
    assert again.status_code == 200


def test_unmapped_status(sb: SandboxServer, seeded: httpx.Client) -> None:
    response = seeded.post(ORDERS, json={"orders": [order(order_status="negotiation")]})
    assert error_of(response) == (400, "invalid_parameter", "orders[0].order_status")

    mapping = {"order_statuses": [{"id": "negotiation", "type": "IN_PROGRESS"}]}
    assert seeded.post("/schema/order_statuses", json=mapping).status_code == 200
    assert (
        seeded.post(ORDERS, json={"orders": [order(order_status="negotiation")]}).status_code == 200
    )


@pytest.mark.parametrize(
    "header",
    [f"Bearer {TOKEN}", TOKEN, "OAuth", "OAuth not-the-token", None],
)
def test_authorization_must_be_oauth_with_a_known_token(
    sb: SandboxServer, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = httpx.post(
        f"{sb.url}/cdp/api/v1/counter/{COUNTER}{CONTACTS}", json=example(EXAMPLE_A), headers=headers
    )
    assert error_of(response)[:2] == (401, "unauthorized")
    assert TOKEN not in response.text
    assert sb.contacts(COUNTER) == []
    assert sb.uploads(COUNTER) == []


def test_unknown_counter(sb: SandboxServer) -> None:
    for counter in ("999", "abc", "99999999999"):
        response = httpx.post(
            f"{sb.url}/cdp/api/v1/counter/{counter}{CONTACTS}",
            json=example(EXAMPLE_A),
            headers={"Authorization": f"OAuth {TOKEN}"},
        )
        assert error_of(response)[:2] == (404, "not_found")


def test_order_before_its_contact(sb: SandboxServer, api: httpx.Client) -> None:
    api.post(
        "/schema/order_statuses", json={"order_statuses": [{"id": "new", "type": "IN_PROGRESS"}]}
    )

    response = api.post(ORDERS, json=example(EXAMPLE_B))

    assert error_of(response) == (400, "invalid_parameter", "orders[0].client_uniq_id")
    assert sb.orders(COUNTER) == []
    api.post("/data/contacts/json?merge_mode=UPDATE", json=example(EXAMPLE_A))
    assert api.post(ORDERS, json=example(EXAMPLE_B)).status_code == 200


def test_contacts_of_another_counter_do_not_count(sb: SandboxServer, seeded: httpx.Client) -> None:
    other = f"{sb.url}/cdp/api/v1/counter/{OTHER_COUNTER}"
    response = seeded.post(f"{other}{ORDERS}", json=example(EXAMPLE_B))
    assert error_of(response) == (400, "invalid_parameter", "orders[0].client_uniq_id")


def test_duplicate_id_in_one_upload(sb: SandboxServer, seeded: httpx.Client) -> None:
    body = {"orders": [order("deal-1"), order("deal-2"), order("deal-1", order_status="won")]}
    assert error_of(seeded.post(ORDERS, json=body)) == (400, "invalid_uploading", "orders[2].id")
    assert sb.orders(COUNTER) == []
    twice = {"contacts": [{"uniq_id": "a"}, {"uniq_id": "a", "name": "A"}]}
    assert error_of(seeded.post(CONTACTS, json=twice)) == (400, "invalid_uploading", "contacts[1].uniq_id")  # fmt: skip


def test_one_bad_row_rejects_the_upload_and_names_every_bad_row(
    sb: SandboxServer, seeded: httpx.Client
) -> None:
    rows = [order(f"deal-{i}") for i in range(6)]
    rows[1]["create_date_time"] = "2025-03-02T11:00:00"
    rows[4]["order_status"] = "unknown-status"
    rows[4]["revenue"] = "5000"

    response = seeded.post(ORDERS, json={"orders": rows})

    assert response.status_code == 400
    locations = [e["location"] for e in response.json()["errors"]]
    assert locations == [
        "orders[1].create_date_time",
        "orders[4].revenue",
        "orders[4].order_status",
    ]
    assert sb.orders(COUNTER) == []
    [rejected] = [u for u in sb.uploads(COUNTER) if u["endpoint"] == "orders"]
    assert rejected["status"] == "rejected"
    assert rejected["elements_count"] == 6
    assert [e["location"] for e in rejected["errors"]] == locations


@pytest.mark.parametrize(
    ("field", "value", "location"),
    [
        ("emails", ["Ivanov@Example.com"], "contacts[0].emails[0]"),
        ("emails", ["ivanov.example.com"], "contacts[0].emails[0]"),
        ("emails", ["ivanov@localhost"], "contacts[0].emails[0]"),
        ("emails", "ivanov@example.com", "contacts[0].emails"),
        ("phones", ["+79995551111"], "contacts[0].phones[0]"),
        ("phones", ["7 999 555-11-11"], "contacts[0].phones[0]"),
        ("phones", [79995551111], "contacts[0].phones[0]"),
        ("emails_md5", ["3C56FF8FEF0F6C65B36B2D25720FE276"], "contacts[0].emails_md5[0]"),
        ("phones_md5", ["f09f2c3d48f31e2a"], "contacts[0].phones_md5[0]"),
        ("client_ids", [1.712345678901234e18], "contacts[0].client_ids[0]"),
        ("client_ids", ["171234567890123456a"], "contacts[0].client_ids[0]"),
        ("client_ids", [-5], "contacts[0].client_ids[0]"),
        ("birth_date", "1990-01-01 00:00:00", "contacts[0].birth_date"),
        ("name", 42, "contacts[0].name"),
        ("uniq_id", "", "contacts[0].uniq_id"),
        ("attribute_values", [{"name": "tier", "value": "gold"}], "contacts[0].attribute_values"),
    ],
)
def test_contact_field_formats(api: httpx.Client, field: str, value: Any, location: str) -> None:
    row = {"uniq_id": "crm-contact-42", field: value}
    response = api.post(CONTACTS, json={"contacts": [row]})
    assert error_of(response) == (400, "invalid_parameter", location)


def test_client_ids_as_integers_are_stored_as_digit_strings(
    sb: SandboxServer, api: httpx.Client
) -> None:
    row = {"uniq_id": "a", "client_ids": [1712345678901234567, "1712345678901234568"]}
    assert api.post(CONTACTS, json={"contacts": [row]}).status_code == 200
    assert sb.contacts(COUNTER)[0]["client_ids"] == ["1712345678901234567", "1712345678901234568"]


@pytest.mark.parametrize(
    ("field", "value", "location"),
    [
        ("client_type", "COMPANY", "orders[0].client_type"),
        ("products", [{"sku": "pear", "quantity": 1}], "orders[0].products"),
        ("products", {"pear": 0}, "orders[0].products.pear"),
        ("products", {"pear": "10"}, "orders[0].products.pear"),
        ("goals", "good_lead", "orders[0].goals"),
        ("goals", [{"goal_action_id": "good_lead", "price": "1"}], "orders[0].goals[0].price"),
        ("goals", [{"goalActionId": "good_lead"}], "orders[0].goals[0].goalActionId"),
        ("revenue", True, "orders[0].revenue"),
        ("currency", "rub", "orders[0].currency"),
        ("id", 1001, "orders[0].id"),
        ("finish_date_time", "2025-03-02T12:00:00", "orders[0].finish_date_time"),
    ],
)
def test_order_field_formats(seeded: httpx.Client, field: str, value: Any, location: str) -> None:
    response = seeded.post(ORDERS, json={"orders": [order(**{field: value})]})
    assert error_of(response) == (400, "invalid_parameter", location)


@pytest.mark.parametrize(
    "missing", ["id", "client_uniq_id", "client_type", "create_date_time", "order_status"]
)
@pytest.mark.parametrize("mode", ["SAVE", "UPDATE", "APPEND"])
def test_every_mode_needs_the_required_fields(
    seeded: httpx.Client, missing: str, mode: str
) -> None:
    response = seeded.post(
        f"/data/orders/json?merge_mode={mode}", json={"orders": [order(**{missing: ...})]}
    )
    assert error_of(response) == (400, "missing_parameter", f"orders[0].{missing}")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"contacts": [', (400, "invalid_json", None)),
        (b"", (400, "invalid_json", None)),
        (b'{"contacts": [{"uniq_id": NaN}]}', (400, "invalid_json", None)),
        (b'{"contacts": []}', (400, "invalid_uploading", "contacts")),
        (b'{"contacts": {"uniq_id": "a"}}', (400, "invalid_uploading", "contacts")),
        (b'{"orders": [{"uniq_id": "a"}]}', (400, "invalid_parameter", "orders")),
        (b"{}", (400, "missing_parameter", "contacts")),
        (b'[{"uniq_id": "a"}]', (400, "invalid_uploading", None)),
        (b'{"contacts": ["a"]}', (400, "invalid_uploading", "contacts[0]")),
    ],
)
def test_malformed_bodies(api: httpx.Client, content: bytes, expected: tuple[Any, ...]) -> None:
    response = api.post(CONTACTS, content=content, headers={"Content-Type": "application/json"})
    assert error_of(response) == expected


def test_body_must_be_sent_as_json(api: httpx.Client) -> None:
    response = api.post(CONTACTS, content=b'{"contacts": [{"uniq_id": "a"}]}')
    assert error_of(response) == (400, "invalid_parameter", "Content-Type")


@pytest.mark.parametrize(
    ("status", "location"),
    [
        ({"id": "new status", "type": "IN_PROGRESS"}, "order_statuses[0].id"),
        ({"id": "x" * 256, "type": "IN_PROGRESS"}, "order_statuses[0].id"),
        ({"id": "новый", "type": "IN_PROGRESS"}, "order_statuses[0].id"),
        ({"type": "IN_PROGRESS"}, "order_statuses[0].id"),
        ({"id": "new", "type": "DONE"}, "order_statuses[0].type"),
        ({"id": "new"}, "order_statuses[0].type"),
        ({"id": "new", "type": "PAID", "goal_action_ids": "good_lead"}, "order_statuses[0].goal_action_ids"),
        ({"id": "new", "type": "PAID", "goal_action_ids": [f"g{i}" for i in range(11)]}, "order_statuses[0].goal_action_ids"),
        ({"id": "new", "type": "PAID", "goal_action_ids": ["g", "g"]}, "order_statuses[0].goal_action_ids"),
        ({"id": "new", "type": "PAID", "humanized": "x" * 4097}, "order_statuses[0].humanized"),
        ({"id": "new", "type": "PAID", "source": "USER"}, "order_statuses[0].source"),
    ],
)  # fmt: skip
def test_order_status_rules(api: httpx.Client, status: dict[str, Any], location: str) -> None:
    response = api.post("/schema/order_statuses", json={"order_statuses": [status]})
    assert error_of(response)[0] == 400
    assert error_of(response)[2] == location
    assert api.get("/schema/order_statuses").json() == {"order_statuses": []}


def test_order_status_edge_values_are_accepted(api: httpx.Client) -> None:
    statuses = [
        {"id": "a:b-c_1", "type": "OTHER", "goal_action_ids": [f"g{i}" for i in range(10)]},
        {"id": "x" * 255, "type": "SPAM", "humanized": "x" * 4096},
    ]
    assert api.post("/schema/order_statuses", json={"order_statuses": statuses}).status_code == 200
