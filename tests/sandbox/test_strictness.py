"""What the real API would refuse and the sandbox used to let pass (issue 15, item 10): a 200
whose upload failed validation (§9), order products missing from the counter's product list
(§8), per-order goals that are no JavaScript-event goal of the counter (§7)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from metrica_bridge.sandbox import SandboxServer
from tests.sandbox.conftest import (
    COUNTER,
    EXAMPLE_A,
    EXAMPLE_C,
    OTHER_COUNTER,
    TOKEN,
    error_of,
    example,
    order,
)

PRODUCTS: dict[str, Any] = {
    "attributes": [],
    "items": [{"name": "pear", "humanized": "Груша"}, {"name": "apple", "humanized": "Яблоко"}],
}


def _management(sb: SandboxServer) -> httpx.Client:
    return httpx.Client(
        base_url=f"{sb.url}/management/v1/counter",
        headers={"Authorization": f"OAuth {TOKEN}"},
        timeout=10,
    )


# -- 200 with api_validation_status FAILED --------------------------------------------------


def test_invalid_as_200_answers_failed_applies_nothing_and_lists_the_upload(
    sb: SandboxServer, seeded: httpx.Client
) -> None:
    sb.set_faults(invalid_as_200=True)
    rows = [order("deal-1"), order("deal-2", client_uniq_id="nobody"), order("deal-3")]

    response = seeded.post("/data/orders/json?merge_mode=SAVE", json={"orders": rows})

    assert response.status_code == 200
    uploading = response.json()["uploading"]
    assert uploading["api_validation_status"] == "FAILED"
    assert uploading["elements_count"] == 3
    [message] = uploading["api_validation_errors"]
    assert "client_uniq_id" in message
    assert "[" not in message  # names no row
    assert sb.orders(COUNTER) == []
    assert sb.uploads(COUNTER)[-1]["status"] == "failed"
    listed = seeded.get("/last_uploadings", params={"limit": 1}).json()["uploadings"]
    assert listed[0]["uploading_id"] == uploading["uploading_id"]
    assert listed[0]["api_validation_status"] == "FAILED"


def test_invalid_as_200_still_answers_400_to_what_cannot_be_read(
    sb: SandboxServer, seeded: httpx.Client
) -> None:
    sb.set_faults(invalid_as_200=True, max_request_rows=2)
    garbled = seeded.post(
        "/data/orders/json?merge_mode=SAVE",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert error_of(garbled)[:2] == (400, "invalid_json")
    too_many = seeded.post(
        "/data/orders/json?merge_mode=SAVE", json={"orders": [order(f"d{i}") for i in range(3)]}
    )
    assert error_of(too_many)[:2] == (400, "too_much_rows")
    # 400s never became uploads: the list holds only the seeding contact upload.
    assert len(seeded.get("/last_uploadings").json()["uploadings"]) == 1


# -- products ---------------------------------------------------------------------------------


def test_without_a_product_list_order_products_are_not_checked(seeded: httpx.Client) -> None:
    response = seeded.post(
        "/data/orders/json?merge_mode=SAVE", json={"orders": [order(products={"kiwi": 1})]}
    )
    assert response.status_code == 200, response.text


def test_with_a_product_list_an_unlisted_product_is_refused_by_row(
    sb: SandboxServer, seeded: httpx.Client
) -> None:
    assert seeded.post("/schema/products", json=PRODUCTS).json() == {"success": True}
    rows = [order("d0", products={"pear": 1}), order("d1", products={"apple": 2, "kiwi": 1})]

    refused = seeded.post("/data/orders/json?merge_mode=SAVE", json={"orders": rows})

    assert error_of(refused) == (400, "invalid_parameter", "orders[1].products.kiwi")
    ok = seeded.post("/data/orders/json?merge_mode=SAVE", json={"orders": rows[:1]})
    assert ok.status_code == 200, ok.text
    # The list is the counter's: the other counter has none yet.
    assert sb.sandbox.store.products(OTHER_COUNTER) == []


def test_the_product_list_body_is_checked(seeded: httpx.Client) -> None:
    bad = {"items": [{"name": "two words"}, {"name": "ok", "colour": "red"}]}
    response = seeded.post("/schema/products", json=bad)
    locations = {e["location"] for e in response.json()["errors"]}
    assert response.status_code == 400
    assert locations == {"attributes", "items[0].name", "items[1].colour"}


def test_products_given_at_start_are_every_counters_list() -> None:
    with (
        SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], products=["pear"]) as sb,
        httpx.Client(
            base_url=f"{sb.url}/cdp/api/v1/counter/{COUNTER}",
            headers={"Authorization": f"OAuth {TOKEN}"},
        ) as api,
    ):
        api.post("/schema/order_statuses", json=example(EXAMPLE_C))
        api.post("/data/contacts/json?merge_mode=SAVE", json=example(EXAMPLE_A))
        refused = api.post(
            "/data/orders/json?merge_mode=SAVE", json={"orders": [order(products={"apple": 1})]}
        )
        assert error_of(refused)[2] == "orders[0].products.apple"
        sb.reset()  # the start-up list comes back after a reset
        assert [p["name"] for p in sb.sandbox.store.products(COUNTER)] == ["pear"]


# -- goals ------------------------------------------------------------------------------------


def test_an_order_goal_must_be_a_javascript_goal_of_the_counter(
    sb: SandboxServer, seeded: httpx.Client
) -> None:
    row = order(goals=[{"goal_action_id": "good_lead"}, {"goal_action_id": "paid_cash"}])
    refused = seeded.post("/data/orders/json?merge_mode=SAVE", json={"orders": [row]})
    assert error_of(refused) == (400, "invalid_parameter", "orders[0].goals[1].goal_action_id")

    with _management(sb) as management:
        url_goal = {"goal": {"name": "Cash", "type": "url",
                             "conditions": [{"type": "exact", "url": "paid_cash"}]}}  # fmt: skip
        assert management.post(f"/{COUNTER}/goals", json=url_goal).status_code == 200
        still = seeded.post("/data/orders/json?merge_mode=SAVE", json={"orders": [row]})
        assert error_of(still)[2] == "orders[0].goals[1].goal_action_id"  # not a JS goal

        js_goal = {"goal": {"name": "Cash", "type": "action",
                            "conditions": [{"type": "exact", "url": "paid_cash"}]}}  # fmt: skip
        created = management.post(f"/{COUNTER}/goals", json=js_goal).json()["goal"]
        assert created["id"] > 0
        listed = management.get(f"/{COUNTER}/goals").json()["goals"]
        assert created in listed
    ok = seeded.post("/data/orders/json?merge_mode=SAVE", json={"orders": [row]})
    assert ok.status_code == 200, ok.text


def test_goal_creation_is_checked(sb: SandboxServer) -> None:
    with _management(sb) as management:
        response = management.post(
            f"/{COUNTER}/goals", json={"goal": {"name": "", "type": "action", "conditions": []}}
        )
    assert response.status_code == 400
    assert {e["location"] for e in response.json()["errors"]} == {"goal.name", "goal.conditions"}


def test_products_and_goals_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.db"
    goal = {"goal": {"name": "Lead", "type": "action",
                     "conditions": [{"type": "exact", "url": "lead"}]}}  # fmt: skip
    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], state_path=path) as sb:
        with _management(sb) as management:
            management.post(f"/{COUNTER}/goals", json=goal)
        with httpx.Client(
            base_url=f"{sb.url}/cdp/api/v1/counter/{COUNTER}",
            headers={"Authorization": f"OAuth {TOKEN}"},
        ) as api:
            api.post("/schema/products", json=PRODUCTS)
    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], state_path=path) as sb:
        store = sb.sandbox.store
        assert {p["name"] for p in store.products(COUNTER)} == {"pear", "apple"}
        assert store.counter(COUNTER).goal_action_ids == {"lead"}
