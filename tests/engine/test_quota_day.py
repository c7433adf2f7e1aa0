"""A whole quota day, compressed (issue 14): the service spends its budget evenly over the day
and, when Metrica's own quota runs out first, waits for the next day instead of dead-lettering.

Quota days are the intervals [k·N, (k+1)·N) of Unix time for the service
(``METRICA_QUOTA_DAY_S``) and the sandbox (``quota_day_s``) alike, so both count the same days.
"""

from __future__ import annotations

import time
from pathlib import Path

from metrica_bridge.kafka.producer import Producer
from metrica_bridge.outcomes import Outcome
from metrica_bridge.sandbox import SandboxServer
from tests.support import crm
from tests.support.kafka import TopicFactory
from tests.support.observe import metric, outcomes
from tests.support.stack import COUNTER, ServiceProcess, service_env, wait_until


def _requests_by_day(sandbox: SandboxServer) -> dict[int, int]:
    by_day = sandbox.stats()["requests_by_quota_day"].get(str(COUNTER), {})
    return {int(day): n for day, n in by_day.items()}


def _waves(deals: int, waves: int) -> list[crm.Stream]:
    """One stream cut into ``waves`` parts with distinct deals: traffic spread over time."""
    stream = crm.build(deals=deals, steps=1, seed=14)
    size = deals // waves
    parts = []
    for w in range(waves):
        part = crm.Stream()
        part.leads = stream.leads[w * size : (w + 1) * size]
        part.statuses = stream.statuses[w * size : (w + 1) * size]
        part.expected = {r["deal_id"]: stream.expected[r["deal_id"]] for _, r in part.leads}
        parts.append(part)
    return parts


def _service(
    bootstrap: str,
    sandbox: SandboxServer,
    names: dict[str, str],
    tmp_path: Path,
    status_map: Path,
    **settings: object,
) -> tuple[ServiceProcess, str]:
    """The service on its own SQLite store (and that store's URL), not started yet."""
    store_url = f"sqlite:///{tmp_path / 'state.db'}"
    env = service_env(
        bootstrap=bootstrap,
        sandbox_url=sandbox.url,
        store_url=store_url,
        topics=names,
        status_map=status_map,
        **settings,
    )
    return ServiceProcess(env, tmp_path / "service.log"), store_url


def _all_delivered(store_url: str, ids: list[str]) -> bool:
    seen = outcomes(store_url, ids)
    return len(seen) == len(ids) and set(seen.values()) == {Outcome.DELIVERED}


def test_a_short_quota_day_spends_no_more_than_the_budget_and_delivers_everything(
    bootstrap: str, topics: TopicFactory, sandbox: SandboxServer, tmp_path: Path, status_map: Path
) -> None:
    day_s, budget = 8, 8
    sandbox.set_faults(quota_day_s=day_s, requests_per_day=1_000)
    names = topics.crm_topics(2)
    service, store_url = _service(
        bootstrap,
        sandbox,
        names,
        tmp_path,
        status_map,
        metrica_daily_budget=budget,
        metrica_quota_day_s=day_s,
    )
    # Steady traffic over about two quota days, a lead every 0.3 s: unpaced, the 200 ms linger
    # would send a contact and an order request for nearly every lead, five times the budget.
    parts = _waves(deals=60, waves=60)
    before = _requests_by_day(sandbox)  # the test's own schema push
    service.start()
    try:
        wait_until(service.answering, 30, "the service to start")
        with Producer({"bootstrap.servers": bootstrap}) as producer:
            for part in parts:
                crm.send(producer, names, part, statuses=False)
                time.sleep(0.3)
        ids = [r["event_id"] for p in parts for _, r in p.leads]
        wait_until(lambda: _all_delivered(store_url, ids), 60, "every event delivered")
        port = service.metrics_port
        assert metric(port, "metrica_bridge_dlq_records_total") == 0
        assert metric(port, "metrica_bridge_metrica_daily_budget") == budget
    finally:
        assert service.terminate() == 0, service.logs()[-3000:]
    spent = _requests_by_day(sandbox)
    per_day = {day: n - before.get(day, 0) for day, n in spent.items() if n > before.get(day, 0)}
    assert max(per_day.values()) <= budget, per_day
    assert len(per_day) >= 2, per_day  # it did live several quota days
    assert crm.histories(sandbox.orders(COUNTER)) == {d: ["new"] for p in parts for d in p.expected}


def test_metricas_quota_running_out_first_makes_events_wait_for_the_next_day(
    bootstrap: str, topics: TopicFactory, sandbox: SandboxServer, tmp_path: Path, status_map: Path
) -> None:
    """The login's quota is shared: Metrica says 429 ``quota_requests_by_uid`` although our own
    count has plenty left. The events wait for the reset (longer than ``RETRY_BUDGET_S``, which
    counts only transient failures), the process stays healthy and says it waits."""
    day_s = 6
    names = topics.crm_topics(2)
    service, store_url = _service(
        bootstrap,
        sandbox,
        names,
        tmp_path,
        status_map,
        metrica_quota_day_s=day_s,
        retry_budget_s=1,
    )
    service.start()
    try:
        port = service.metrics_port
        wait_until(service.answering, 30, "the service to start")
        # Two requests a day: one wave's contacts and orders, the next wave must wait.
        sandbox.set_faults(quota_day_s=day_s, requests_per_day=2)
        parts = _waves(deals=40, waves=4)
        waited = False
        with Producer({"bootstrap.servers": bootstrap}) as producer:
            for part in parts:
                crm.send(producer, names, part, statuses=False)
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline:
                    if metric(port, "metrica_bridge_metrica_quota_waiting") == 1:
                        waited = True
                        assert service.answering()  # alive and healthy while it waits
                    time.sleep(0.2)
        ids = [r["event_id"] for p in parts for _, r in p.leads]
        wait_until(lambda: _all_delivered(store_url, ids), 60, "every event delivered")
        assert waited, "the quota-waiting gauge never said so"
        refused = sandbox.stats()["refused_by_quota_day"]
        assert any(types.get("quota_requests_by_uid") for types in refused.values()), refused
        assert metric(port, "metrica_bridge_dlq_records_total") == 0
    finally:
        assert service.terminate() == 0, service.logs()[-3000:]
    assert crm.histories(sandbox.orders(COUNTER)) == {d: ["new"] for p in parts for d in p.expected}
