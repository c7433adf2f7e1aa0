"""The documented examples (metrica-api.md §18 A, B, C) and the read endpoints."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx

from metrica_bridge.sandbox import SandboxServer
from tests.sandbox.conftest import (
    COUNTER,
    EXAMPLE_A,
    EXAMPLE_B,
    EXAMPLE_C,
    TOKEN,
    error_of,
    example,
)


def test_example_a_contacts_upload(sb: SandboxServer, api: httpx.Client) -> None:
    response = api.post("/data/contacts/json?merge_mode=UPDATE", json=example(EXAMPLE_A))

    assert response.status_code == 200
    uploading = response.json()["uploading"]
    assert set(uploading) == {
        "uploading_id", "datetime", "api_validation_status", "elements_count",
        "entity_type", "uploading_format", "uploading_source",
    }  # fmt: skip
    assert uploading["api_validation_status"] == "PASSED"
    assert uploading["elements_count"] == 1
    assert uploading["uploading_format"] == "JSON"
    assert uploading["uploading_source"] == "API"
    assert datetime.fromisoformat(uploading["datetime"]) > datetime.now(UTC) - timedelta(minutes=1)
    assert sb.contacts(COUNTER) == EXAMPLE_A["contacts"]


def test_example_c_order_statuses_round_trip(api: httpx.Client) -> None:
    assert api.get("/schema/order_statuses").json() == {"order_statuses": []}

    response = api.post("/schema/order_statuses", json=example(EXAMPLE_C))

    assert response.status_code == 200
    assert response.json() == {"success": True}
    got = {s["id"]: s for s in api.get("/schema/order_statuses").json()["order_statuses"]}
    assert list(got) == ["new", "qualified", "won", "lost", "junk"]
    assert got["qualified"] == {
        "id": "qualified",
        "humanized": "Качественный лид",
        "type": "OTHER",
        "goal_action_ids": ["good_lead"],
        "order_status_source": "USER",
    }
    assert got["new"]["goal_action_ids"] == []


def test_order_statuses_post_upserts_by_id(api: httpx.Client) -> None:
    api.post("/schema/order_statuses", json=example(EXAMPLE_C))
    renamed = {"order_statuses": [{"id": "won", "humanized": "Выигран", "type": "PAID"}]}

    assert api.post("/schema/order_statuses", json=renamed).status_code == 200

    got = {s["id"]: s for s in api.get("/schema/order_statuses").json()["order_statuses"]}
    assert len(got) == 5
    assert got["won"]["humanized"] == "Выигран"


def test_example_b_order_after_its_contact(sb: SandboxServer, api: httpx.Client) -> None:
    api.post("/data/contacts/json?merge_mode=UPDATE", json=example(EXAMPLE_A))

    response = api.post("/data/orders/json?merge_mode=SAVE", json=example(EXAMPLE_B))

    assert response.status_code == 200, response.text
    uploading = response.json()["uploading"]
    assert uploading["api_validation_status"] == "PASSED"
    assert uploading["elements_count"] == 1
    [stored] = sb.orders(COUNTER)
    history = stored.pop("history")
    assert stored == EXAMPLE_B["orders"][0]
    assert [h["uploading_id"] for h in history] == [uploading["uploading_id"]]
    assert history[0]["order_status"] == "IN_PROGRESS"


def test_management_counter_reports_time_zone(sb: SandboxServer) -> None:
    response = httpx.get(
        f"{sb.url}/management/v1/counter/{COUNTER}", headers={"Authorization": f"OAuth {TOKEN}"}
    )

    assert response.status_code == 200
    counter = response.json()["counter"]
    assert counter["id"] == COUNTER
    assert counter["time_zone_name"] == "Europe/Moscow"
    assert counter["time_zone_offset"] == 180  # Moscow has kept UTC+3 since 2014


def test_management_counter_needs_oauth_and_a_known_counter(sb: SandboxServer) -> None:
    url = f"{sb.url}/management/v1/counter"
    assert error_of(httpx.get(f"{url}/{COUNTER}"))[:2] == (401, "unauthorized")
    unknown = httpx.get(f"{url}/999", headers={"Authorization": f"OAuth {TOKEN}"})
    assert error_of(unknown)[:2] == (404, "not_found")


def test_last_uploadings_newest_first_with_limit_and_offset(api: httpx.Client) -> None:
    ids = []
    for i in range(3):
        body = {"contacts": [{"uniq_id": f"c{i}"}]}
        ids.append(api.post("/data/contacts/json?merge_mode=SAVE", json=body).json()["uploading"]["uploading_id"])  # fmt: skip
    api.post("/data/contacts/json", json={"contacts": [{"uniq_id": "x"}]})  # rejected: not listed

    listed = api.get("/last_uploadings").json()["uploadings"]
    assert [u["uploading_id"] for u in listed] == ids[::-1]
    assert all(u["api_validation_status"] == "PASSED" for u in listed)
    limited = api.get("/last_uploadings", params={"limit": 2}).json()["uploadings"]
    assert [u["uploading_id"] for u in limited] == ids[:0:-1]

    time.sleep(1.05)  # datetime_offset has a one-second resolution
    later = api.post("/data/contacts/json?merge_mode=SAVE", json={"contacts": [{"uniq_id": "z"}]})
    offset = later.json()["uploading"]["datetime"].replace("T", " ").rstrip("Z")
    before = api.get("/last_uploadings", params={"datetime_offset": offset}).json()["uploadings"]
    assert [u["uploading_id"] for u in before] == ids[::-1]


def test_last_uploadings_rejects_bad_parameters(api: httpx.Client) -> None:
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": "ten"}):
        assert error_of(api.get("/last_uploadings", params=params)) == (
            400, "invalid_parameter", "limit",
        )  # fmt: skip
    bad_offset = api.get("/last_uploadings", params={"datetime_offset": "2020-02-10T10:00:00Z"})
    assert error_of(bad_offset) == (400, "invalid_parameter", "datetime_offset")
    assert api.get("/last_uploadings", params={"limit": 1000, "source": "API"}).status_code == 200


def test_unknown_path_answers_a_metrica_error_body(sb: SandboxServer) -> None:
    response = httpx.post(
        f"{sb.url}/cdp/api/v1/counter/{COUNTER}/data/simple_orders",
        headers={"Authorization": f"OAuth {TOKEN}"},
    )
    assert error_of(response)[:2] == (404, "not_found")
