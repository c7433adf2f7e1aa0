"""``--state PATH``: the data survives a restart in a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import httpx

from metrica_bridge.sandbox import SandboxServer
from tests.sandbox.conftest import COUNTER, EXAMPLE_A, EXAMPLE_C, TOKEN, example, order


def _client(sb: SandboxServer) -> httpx.Client:
    return httpx.Client(
        base_url=f"{sb.url}/cdp/api/v1/counter/{COUNTER}",
        headers={"Authorization": f"OAuth {TOKEN}"},
    )


def test_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.db"
    with (
        SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], state_path=path) as sb,
        _client(sb) as api,
    ):
        api.post("/schema/order_statuses", json=example(EXAMPLE_C))
        api.post("/data/contacts/json?merge_mode=SAVE", json=example(EXAMPLE_A))
        api.post("/data/orders/json?merge_mode=SAVE", json={"orders": [order()]})
        api.post(
            "/data/orders/json?merge_mode=UPDATE",
            json={"orders": [order(order_status="won", revenue=120.5)]},
        )
        api.post("/data/orders/json", json={"orders": [order()]})  # rejected, logged too
        before = (sb.contacts(COUNTER), sb.orders(COUNTER), sb.uploads(COUNTER))
        last_id = int(sb.uploads(COUNTER)[-1]["uploading_id"])

    with (
        SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], state_path=path) as sb,
        _client(sb) as api,
    ):
        assert (sb.contacts(COUNTER), sb.orders(COUNTER), sb.uploads(COUNTER)) == before
        assert len(api.get("/schema/order_statuses").json()["order_statuses"]) == 5
        assert len(api.get("/last_uploadings").json()["uploadings"]) == 3
        # Mapped statuses and contacts still count, creation dates are still guarded.
        ok = api.post(
            "/data/orders/json?merge_mode=UPDATE", json={"orders": [order(order_status="lost")]}
        )
        assert int(ok.json()["uploading"]["uploading_id"]) > last_id
        moved = api.post(
            "/data/orders/json?merge_mode=UPDATE",
            json={"orders": [order(create_date_time="2025-03-03")]},
        )
        assert moved.status_code == 400
        [stored] = sb.orders(COUNTER)
        assert [h["order_status"] for h in stored["history"]] == ["new", "won", "lost"]
        # Each entry keeps the revenue and client the order had after it (the chaos accounting
        # checks them), across the restart too.
        assert [h["revenue"] for h in stored["history"]] == [None, 120.5, 120.5]
        assert {h["client_uniq_id"] for h in stored["history"]} == {"crm-contact-42"}
        sb.reset()

    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], state_path=path) as sb:
        assert (sb.contacts(COUNTER), sb.orders(COUNTER), sb.uploads(COUNTER)) == ([], [], [])


def test_without_a_state_file_nothing_is_kept() -> None:
    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER]) as sb, _client(sb) as api:
        api.post("/data/contacts/json?merge_mode=SAVE", json=example(EXAMPLE_A))
        assert len(sb.contacts(COUNTER)) == 1
    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER]) as sb:
        assert sb.contacts(COUNTER) == []
