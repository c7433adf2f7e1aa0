"""Hypotheses the real API leaves open (metrica-api.md §6, §17), each a fault: the rows and
bytes an upload may hold, and whether upload errors name their rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from metrica_bridge.sandbox import SandboxServer
from tests.sandbox.conftest import COUNTER, TOKEN, error_of, order

CONTACTS = "/data/contacts/json?merge_mode=SAVE"
ORDERS = "/data/orders/json?merge_mode=SAVE"
JSON = {"Content-Type": "application/json"}


def _contacts(n: int) -> dict[str, Any]:
    return {"contacts": [{"uniq_id": f"c{i}"} for i in range(n)]}


def _body_of(size: int) -> bytes:
    """One contact, its uniq_id padded so the body is exactly ``size`` bytes."""
    bare = len(json.dumps({"contacts": [{"uniq_id": ""}]}).encode())
    body = json.dumps({"contacts": [{"uniq_id": "x" * (size - bare)}]}).encode()
    assert len(body) == size
    return body


# -- rows ----------------------------------------------------------------------------------------


def test_default_row_limit(sb: SandboxServer, api: httpx.Client) -> None:
    assert sb.faults()["max_request_rows"] == 10_000
    assert api.post(CONTACTS, json=_contacts(10_000)).status_code == 200
    assert error_of(api.post(CONTACTS, json=_contacts(10_001))) == (
        400, "too_much_rows", "contacts",
    )  # fmt: skip


def test_max_request_rows(sb: SandboxServer, seeded: httpx.Client) -> None:
    sb.set_faults(max_request_rows=2)

    assert error_of(seeded.post(CONTACTS, json=_contacts(3))) == (400, "too_much_rows", "contacts")
    three = {"orders": [order(f"deal-{i}") for i in range(3)]}
    assert error_of(seeded.post(ORDERS, json=three)) == (400, "too_much_rows", "orders")
    assert seeded.post(CONTACTS, json=_contacts(2)).status_code == 200
    assert sb.uploads(COUNTER)[-2]["status"] == "rejected"

    sb.reset()

    assert seeded.post(CONTACTS, json=_contacts(3)).status_code == 200


# -- bytes ---------------------------------------------------------------------------------------


def _chunks(body: bytes) -> Iterator[bytes]:
    yield body[:10]
    yield body[10:]


def test_oversized_body_is_a_proxy_413_before_anything_else(
    sb: SandboxServer, api: httpx.Client
) -> None:
    assert sb.faults()["max_request_bytes"] is None
    sb.set_faults(max_request_bytes=300, requests_per_day=1)

    at_limit = api.post(CONTACTS, content=_body_of(300), headers=JSON)
    over = api.post(CONTACTS, content=_body_of(301), headers=JSON)

    assert at_limit.status_code == 200
    # 413 and not 429: the size is decided before quotas, and the answer is not Metrica's JSON.
    assert over.status_code == 413
    assert over.headers["content-type"].startswith("text/html")
    assert "413 Request Entity Too Large" in over.text
    url = f"{sb.url}/cdp/api/v1/counter"
    for response in (
        httpx.post(f"{url}/{COUNTER}{CONTACTS}", content=_body_of(301), headers=JSON),  # no auth
        httpx.post(f"{url}/999{CONTACTS}", content=_body_of(301), headers=JSON),  # no counter
        api.post(CONTACTS, content=_chunks(_body_of(301)), headers=JSON),  # no Content-Length
        api.post(CONTACTS, content=_body_of(5_000_000), headers=JSON),  # drained, not read
        api.post("/schema/order_statuses", content=_body_of(301), headers=JSON),
    ):
        assert response.status_code == 413
    # Nothing touched, no quota spent, and the connection still serves.
    assert len(sb.uploads(COUNTER)) == 1
    stats = sb.stats()
    assert stats["requests_today_by_counter"] == {str(COUNTER): 1}
    assert stats["refused_by_quota_day"] == {}
    assert error_of(api.get("/last_uploadings"))[1] == "quota_requests_by_uid"

    sb.reset()

    assert api.post(CONTACTS, json=_contacts(500)).status_code == 200


def test_no_byte_limit_by_default(sb: SandboxServer, api: httpx.Client) -> None:
    big = api.post(CONTACTS, content=_body_of(2_000_000), headers=JSON)
    assert big.status_code == 200


# -- error locations -----------------------------------------------------------------------------


def _items(response: httpx.Response) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = response.json()["errors"]
    return items


def test_upload_errors_without_locations(sb: SandboxServer, seeded: httpx.Client) -> None:
    sb.set_faults(error_locations=False)
    bad_order = {"orders": [order(), order("deal-2", order_status="nope")]}

    answers = [
        seeded.post(ORDERS, json=bad_order),
        seeded.post(CONTACTS, json={"contacts": [{"uniq_id": "a", "emails": ["bad"]}]}),
        seeded.post(CONTACTS, json=_contacts(1), headers={"Authorization": "OAuth nope"}),
        seeded.post("/data/contacts/json", json=_contacts(1)),  # no merge_mode
    ]

    assert [r.status_code for r in answers] == [400, 400, 401, 400]
    for response in answers:
        assert {tuple(sorted(item)) for item in _items(response)} == {("error_type", "message")}
    # Only uploads: other endpoints still name what is wrong.
    assert error_of(seeded.get("/last_uploadings", params={"limit": 0}))[2] == "limit"
    # The sandbox's own log keeps them, for whoever inspects a run.
    assert sb.uploads(COUNTER)[-1]["errors"][0]["location"] == "merge_mode"

    sb.set_faults(error_locations=True)

    assert error_of(seeded.post(ORDERS, json=bad_order))[2] == "orders[1].order_status"


def test_locations_by_default(sb: SandboxServer, api: httpx.Client) -> None:
    assert sb.faults()["error_locations"] is True
    response = api.post(CONTACTS, json=_contacts(1), headers={"Authorization": f"OAuth {TOKEN}x"})
    assert error_of(response)[:2] == (401, "unauthorized")
    assert "location" in _items(response)[0]
