"""Inspection endpoints: order history and the upload log."""

from __future__ import annotations

import httpx

from metrica_bridge.sandbox import SandboxServer
from tests.sandbox.conftest import COUNTER, OTHER_COUNTER, error_of, order

ORDERS = "/data/orders/json?merge_mode=UPDATE"


def test_history_has_one_entry_per_accepted_upload_in_arrival_order(
    sb: SandboxServer, seeded: httpx.Client
) -> None:
    ids = []
    for status in ("new", "qualified", "qualified", "won"):
        response = seeded.post(ORDERS, json={"orders": [order(order_status=status)]})
        ids.append(response.json()["uploading"]["uploading_id"])
    seeded.post(ORDERS, json={"orders": [order(order_status="nope")]})  # rejected: no entry

    [stored] = sb.orders(COUNTER)

    assert stored["order_status"] == "won"
    history = stored["history"]
    assert [h["order_status"] for h in history] == ["new", "qualified", "qualified", "won"]
    assert [h["uploading_id"] for h in history] == ids
    assert [h["received_at"] for h in history] == sorted(h["received_at"] for h in history)
    assert len(set(ids)) == 4


def test_uploads_log_accepted_and_rejected_in_order(
    sb: SandboxServer, seeded: httpx.Client
) -> None:
    seeded.post(ORDERS, json={"orders": [order(), order("deal-2")]})
    seeded.post("/data/orders/json", json={"orders": [order()]})
    seeded.post(ORDERS, json={"orders": [order("deal-3", order_status="nope")]})

    uploads = sb.uploads(COUNTER)

    assert [(u["endpoint"], u["status"], u["merge_mode"], u["elements_count"], u["http_status"])
            for u in uploads] == [
        ("contacts", "accepted", "SAVE", 1, 200),  # from the `seeded` fixture
        ("orders", "accepted", "UPDATE", 2, 200),
        ("orders", "rejected", None, 0, 400),
        ("orders", "rejected", "UPDATE", 1, 400),
    ]  # fmt: skip
    assert uploads[1]["errors"] == []
    assert uploads[2]["errors"][0]["location"] == "merge_mode"
    assert uploads[3]["errors"][0]["location"] == "orders[0].order_status"
    assert sorted(uploads, key=lambda u: int(u["uploading_id"])) == uploads
    assert sb.uploads(OTHER_COUNTER) == []


def test_inspection_of_an_unknown_counter(sb: SandboxServer) -> None:
    for what in ("contacts", "orders", "uploads"):
        assert error_of(httpx.get(f"{sb.url}/_sandbox/counters/999/{what}"))[:2] == (
            404,
            "not_found",
        )


def test_reset_clears_data(sb: SandboxServer, seeded: httpx.Client) -> None:
    seeded.post(ORDERS, json={"orders": [order()]})
    before = sb.uploads(COUNTER)[-1]["uploading_id"]

    sb.reset()

    assert (sb.contacts(COUNTER), sb.orders(COUNTER), sb.uploads(COUNTER)) == ([], [], [])
    assert seeded.get("/schema/order_statuses").json() == {"order_statuses": []}
    again = seeded.post(
        "/data/contacts/json?merge_mode=SAVE", json={"contacts": [{"uniq_id": "a"}]}
    )
    assert int(again.json()["uploading"]["uploading_id"]) > int(before)  # ids never reused
