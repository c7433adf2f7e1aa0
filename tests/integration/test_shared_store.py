"""Two deployments share one store: one consumes deal-status-changed, the other payment-received
(and the leads), for the same deals, with late and duplicate events. Claims on the store
serialise the updates of one order across the processes; the stale rule (occurred_at, version)
keeps any order from going backwards.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from metrica_bridge.sandbox import SandboxServer
from tests.support import mixed
from tests.support.kafka import TopicFactory
from tests.support.observe import outcomes
from tests.support.oracle import is_subsequence
from tests.support.stack import COUNTER, ServiceProcess, service_env, wait_until

DEALS = 80


@pytest.fixture(params=["postgres", "sqlite"])
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"  # two processes, one file, one host
    return str(request.getfixturevalue("postgres_url"))


def test_two_processes_one_store_final_state_right_and_no_history_goes_back(
    bootstrap: str,
    topics: TopicFactory,
    sandbox: SandboxServer,
    status_map: Path,
    shared_store_url: str,
    tmp_path: Path,
) -> None:
    stream = mixed.build(DEALS, updates=6, seed=17)
    # the stream exercises what it claims
    assert stream.late > 20
    assert stream.duplicates > 10
    names = topics.crm_topics(3)
    env = service_env(
        bootstrap=bootstrap,
        sandbox_url=sandbox.url,
        store_url=shared_store_url,
        topics=names,
        status_map=status_map,
        batch_linger_ms=50,
        commit_interval_ms=100,
    )
    deals_proc = ServiceProcess(
        env, tmp_path / "deals.log", ["--topic", names["deal-status-changed"]]
    )
    payments_proc = ServiceProcess(
        env,
        tmp_path / "payments.log",
        ["--topic", names["payment-received"], "--topic", names["lead-created"]],
    )
    deals_proc.start()
    payments_proc.start()
    try:
        # The leads make the orders (with the identity) first; then both processes race on
        # the same orders.
        mixed.produce(bootstrap, names["lead-created"], stream.leads)
        wait_until(
            lambda: len(sandbox.orders(COUNTER)) == DEALS, 60, "every order created", poll=0.5
        )
        # A slow Metrica keeps updates of one order in flight in both processes at once: only
        # the claims keep them from deciding on the same stale order state.
        sandbox.set_faults(latency_ms=150)
        mixed.produce(bootstrap, names["deal-status-changed"], stream.statuses)
        mixed.produce(bootstrap, names["payment-received"], stream.payments)
        ids = stream.event_ids()
        wait_until(
            lambda: len(outcomes(shared_store_url, ids)) == len(ids),
            90,
            "an outcome for every event",
            poll=1.0,
        )
    finally:
        codes = (deals_proc.terminate(), payments_proc.terminate())
    assert codes == (0, 0), (deals_proc.logs()[-2000:], payments_proc.logs()[-2000:])

    recorded = outcomes(shared_store_url, ids)
    assert "dead_lettered" not in recorded.values()
    assert "parked" not in recorded.values()
    # Late events really raced: some were stale when they arrived.
    assert "stale" in recorded.values()
    orders = {o["id"]: o for o in sandbox.orders(COUNTER)}
    contacts = {c["uniq_id"]: c for c in sandbox.contacts(COUNTER)}
    assert set(orders) == set(stream.expected)
    wrong: list[tuple[str, object, object]] = []
    for deal, want in stream.expected.items():
        order = orders[deal]
        history = [h["order_status"] for h in order["history"]]
        assert is_subsequence(mixed.status_steps(history), want.ordered), (
            deal,
            history,
            want.ordered,
        )
        assert len(history) <= 1 + want.updates, (deal, history)
        if order["order_status"] != want.final:
            wrong.append((deal, order["order_status"], want.final))
        got_revenue = None if order.get("revenue") is None else Decimal(str(order["revenue"]))
        if got_revenue != want.revenue:
            wrong.append((deal, got_revenue, want.revenue))
        assert order["client_uniq_id"] == want.client
        assert want.client_id in contacts[want.client]["client_ids"]
    assert not wrong, f"{len(wrong)} wrong: {wrong[:5]}"
