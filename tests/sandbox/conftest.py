"""A real sandbox over HTTP, shared by the module's tests and reset before each one."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from metrica_bridge.sandbox import QuotaLimits, SandboxServer

TOKEN = "t0k-secret-value"
COUNTER = 42
OTHER_COUNTER = 43
COUNTER_GOALS = ("good_lead", "g1", "g2", "g3")

# metrica-api.md §18, examples A, B (§6) and C, as printed there.
EXAMPLE_A: dict[str, Any] = {
    "contacts": [
        {
            "uniq_id": "crm-contact-42",
            "name": "Иванов И.",
            "create_date_time": "2025-03-01 10:15:00",
            "update_date_time": "2025-03-02 09:00:00",
            "client_ids": ["1712345678901234567"],
            "emails": ["ivanov@example.com"],
            "phones": ["79995551111"],
            "emails_md5": ["3c56ff8fef0f6c65b36b2d25720fe276"],
        }
    ]
}
EXAMPLE_B: dict[str, Any] = {
    "orders": [
        {
            "id": "deal-1001",
            "client_uniq_id": "crm-contact-42",
            "client_type": "CONTACT",
            "order_status": "IN_PROGRESS",
            "create_date_time": "2025-03-02 11:00:00",
            "update_date_time": "2025-03-05 12:00:00",
            "revenue": 5000,
            "cost": 4000,
            "currency": "RUB",
            "goals": [{"goal_action_id": "good_lead", "price": 123.5}],
            "products": {"pear": 10, "apple": 30},
        }
    ]
}
EXAMPLE_C: dict[str, Any] = {
    "order_statuses": [
        {"id": "new", "humanized": "Новый", "type": "IN_PROGRESS"},
        {
            "id": "qualified",
            "humanized": "Качественный лид",
            "type": "OTHER",
            "goal_action_ids": ["good_lead"],
        },
        {"id": "won", "humanized": "Оплачен", "type": "PAID"},
        {"id": "lost", "humanized": "Отменен", "type": "CANCELLED"},
        {"id": "junk", "humanized": "Спам", "type": "SPAM"},
    ]
}


def example(body: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(body)


def order(order_id: str = "deal-1", **fields: Any) -> dict[str, Any]:
    row = {
        "id": order_id,
        "client_uniq_id": "crm-contact-42",
        "client_type": "CONTACT",
        "order_status": "new",
        "create_date_time": "2025-03-02 11:00:00",
    }
    row.update(fields)
    return {k: v for k, v in row.items() if v is not ...}


def error_of(response: httpx.Response) -> tuple[int, str, str | None]:
    """(code, first error_type, first location), after checking the §11 body shape."""
    body = response.json()
    assert set(body) == {"errors", "code", "message"}
    assert body["code"] == response.status_code
    assert body["errors"], body
    for item in body["errors"]:
        assert set(item) == {"error_type", "message", "location"}
    assert body["message"] == body["errors"][0]["message"]
    first = body["errors"][0]
    return response.status_code, first["error_type"], first["location"]


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    # Generous quotas so ordinary tests never meet them; quota tests set their own.
    limits = QuotaLimits(parallel=3, per_second=10_000, daily=1_000_000)
    # The counters' JavaScript-event goals: example B's order names good_lead (an order's goals
    # must be goals of the counter, metrica-api.md §7); the merge-mode tests use g1-g3.
    with SandboxServer(
        tokens=[TOKEN, "second-token"],
        counter_ids=[COUNTER, OTHER_COUNTER],
        limits=limits,
        goals=COUNTER_GOALS,
    ) as sb:
        yield sb


@pytest.fixture
def sb(server: SandboxServer) -> SandboxServer:
    server.reset()
    return server


@pytest.fixture
def api(sb: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{sb.url}/cdp/api/v1/counter/{COUNTER}",
        headers={"Authorization": f"OAuth {TOKEN}"},
        timeout=10,
    ) as client:
        yield client


@pytest.fixture
def seeded(api: httpx.Client) -> httpx.Client:
    """Example C's statuses and example A's contact in place, so orders can be sent."""
    assert api.post("/schema/order_statuses", json=example(EXAMPLE_C)).status_code == 200
    assert (
        api.post("/data/contacts/json?merge_mode=SAVE", json=example(EXAMPLE_A)).status_code == 200
    )
    return api
