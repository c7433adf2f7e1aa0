"""Backpressure and shutdown: while Metrica is down the partitions pause instead of buffering
without limit; SIGTERM drains and exits within the configured time, losing nothing."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from metrica_bridge.sandbox import SandboxServer
from tests.support import crm
from tests.support.kafka import TopicFactory
from tests.support.stack import COUNTER, ServiceProcess, service_env, wait_until

LIMIT = 150


def _gauge(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


def test_outage_pauses_instead_of_buffering_and_sigterm_drains_in_time(
    bootstrap: str, topics: TopicFactory, sandbox: SandboxServer, tmp_path: Path, status_map: Path
) -> None:
    stream = crm.build(deals=600, steps=1, seed=3)
    names = topics.crm_topics(2)
    env = service_env(
        bootstrap=bootstrap,
        sandbox_url=sandbox.url,
        store_url=f"sqlite:///{tmp_path / 'state.db'}",
        topics=names,
        status_map=status_map,
        max_in_flight_events=LIMIT,
        retry_budget_s=600,
        retry_max_attempts=1000,
        shutdown_timeout_s=5,
    )
    service = ServiceProcess(env, tmp_path / "service.log").start()
    wait_until(lambda: _ready(service.metrics_port), 30, "the service to be ready")
    sandbox.set_faults(outage_seconds=600)
    crm.produce(bootstrap, names, stream, statuses=False)
    peak = 0.0
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        peak = max(peak, _gauge(service.metrics_port, "metrica_bridge_in_flight_events"))
        time.sleep(0.2)
    lag = _gauge(service.metrics_port, "metrica_bridge_consumer_lag")
    # Paused: never more than the limit plus one poll in flight, the rest waits in Kafka.
    assert 0 < peak <= 2 * LIMIT
    assert lag > 0
    started = time.monotonic()
    code = service.terminate(timeout=60)
    stopped_in = time.monotonic() - started
    assert code == 0, service.logs()[-3000:]
    assert stopped_in < 5 + 10  # the drain timeout plus closing
    assert sandbox.orders(COUNTER) == []

    # Nothing was lost: after the outage a new process delivers every lead exactly once.
    sandbox.set_faults(outage_seconds=0)
    service = ServiceProcess(env, tmp_path / "service.log").start()
    try:
        wait_until(
            lambda: crm.histories(sandbox.orders(COUNTER)) == {d: ["new"] for d in stream.expected},
            90,
            "every lead's order",
        )
    finally:
        assert service.terminate() == 0


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
