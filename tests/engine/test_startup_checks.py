"""Start-up checks against the counter (issue 15, items 1 and 8), on a real sandbox.

Item 1: the counter's ``time_zone_name`` is always read; a ``METRICA_TIMEZONE`` naming another
zone refuses to start (a configuration error, exit 1, no traceback) unless
``METRICA_TIMEZONE_OVERRIDE`` is set. Item 8: until ``/schema/order_statuses`` holds the status
map the service is alive but not ready, consumes nothing and says which command to run; it goes
on by itself once they agree, or pushes the map itself with ``METRICA_SCHEMA_SYNC_ON_START``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from metrica_bridge import service as service_module
from metrica_bridge.codec import Codec
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.kafka.broker import free_port
from metrica_bridge.kafka.producer import Producer
from metrica_bridge.metrics import REGISTRY
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.service import Service
from tests.ops.support import get
from tests.support import crm
from tests.support.kafka import TopicFactory
from tests.support.stack import COUNTER, TOKEN, ServiceProcess, service_env, wait_until

SCHEMA_SYNC = "run `metrica-bridge schema-sync`"
CODEC = Codec.from_dir(PROJECT_ROOT / "schemas")


def _env(
    sandbox: SandboxServer, tmp_path: Path, status_map: Path, **extra: object
) -> dict[str, str]:
    """Nothing reaches Kafka before the start-up checks: no broker needed to refuse."""
    names = {k: f"unused-{k}" for k in ("lead-created", "deal-status-changed", "payment-received")}
    return service_env(
        bootstrap=f"127.0.0.1:{free_port()}",
        sandbox_url=sandbox.url,
        store_url=f"sqlite:///{tmp_path / 'state.db'}",
        topics=names,
        status_map=status_map,
        create_topics="false",
        **extra,
    )


def _setup_error() -> float | None:
    return REGISTRY.get_sample_value("metrica_bridge_setup_error")


def _order_statuses(sandbox: SandboxServer) -> dict[str, str]:
    response = httpx.get(
        f"{sandbox.url}/cdp/api/v1/counter/{COUNTER}/schema/order_statuses",
        headers={"Authorization": f"OAuth {TOKEN}"},
    )
    response.raise_for_status()
    return {s["id"]: s["type"] for s in response.json()["order_statuses"]}


def _ready_then_stopped(env: dict[str, str], tmp_path: Path) -> str:
    """Start the service, wait until it is ready, stop it cleanly; its logs."""
    service = ServiceProcess(env, tmp_path / "service.log").start()
    try:
        wait_until(lambda: get(service.metrics_port, "/readyz")[0] == 200, 60, "ready")
    finally:
        assert service.terminate() == 0, service.logs()[-3000:]
    return service.logs()


def _refused(env: dict[str, str], tmp_path: Path) -> str:
    """Start the service, expect it to exit 1 by itself; its logs."""
    service = ServiceProcess(env, tmp_path / "service.log").start()
    try:
        assert service.proc is not None
        code = service.proc.wait(60)
    finally:
        service.kill()
    logs = service.logs()
    assert code == 1, logs[-3000:]
    return logs


def _lines(logs: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in logs.splitlines() if line.startswith("{")]


def test_a_time_zone_other_than_the_counter_s_refuses_to_start(
    sandbox: SandboxServer, tmp_path: Path, status_map: Path
) -> None:
    env = _env(sandbox, tmp_path, status_map, metrica_timezone="Asia/Yekaterinburg")
    logs = _refused(env, tmp_path)
    message = (
        f"METRICA_TIMEZONE=Asia/Yekaterinburg differs from the time zone of counter {COUNTER} in "
        "Metrica (Europe/Moscow)"
    )
    # One structured line for the log pipeline, one plain line on exit; no traceback.
    assert f"configuration error: {message}" in logs, logs[-3000:]
    assert "METRICA_TIMEZONE_OVERRIDE=true" in logs
    refused = [line for line in _lines(logs) if line["event"].endswith("refusing to start")]
    assert len(refused) == 1, logs[-3000:]
    assert refused[0]["level"] == "error"
    assert (refused[0]["timezone"], refused[0]["counter_timezone"]) == (
        "Asia/Yekaterinburg",
        "Europe/Moscow",
    )
    assert "Traceback" not in logs
    assert TOKEN not in logs
    assert sandbox.uploads(COUNTER) == []


def test_a_time_zone_that_is_not_one_refuses_to_start(
    sandbox: SandboxServer, tmp_path: Path, status_map: Path
) -> None:
    env = _env(sandbox, tmp_path, status_map, metrica_timezone="Moscow")
    logs = _refused(env, tmp_path)
    assert "configuration error: METRICA_TIMEZONE 'Moscow' is not an IANA time zone" in logs
    assert "Traceback" not in logs


def test_the_override_sends_dates_in_the_configured_zone_with_a_warning(
    bootstrap: str, topics: TopicFactory, sandbox: SandboxServer, tmp_path: Path, status_map: Path
) -> None:
    names = topics.crm_topics(1)
    env = service_env(
        bootstrap=bootstrap,
        sandbox_url=sandbox.url,
        store_url=f"sqlite:///{tmp_path / 'state.db'}",
        topics=names,
        status_map=status_map,
        metrica_timezone="Asia/Yekaterinburg",
        metrica_timezone_override="true",
    )
    lines = _lines(_ready_then_stopped(env, tmp_path))
    warned = [line for line in lines if line["event"].startswith("METRICA_TIMEZONE_OVERRIDE")]
    assert len(warned) == 1, lines
    assert warned[0]["level"] == "warning"
    # The counter was asked even though METRICA_TIMEZONE was set.
    assert warned[0]["counter_timezone"] == "Europe/Moscow"
    running = next(line for line in lines if line["event"] == "running")
    assert running["timezone"] == "Asia/Yekaterinburg"


def test_the_counter_s_own_zone_is_asked_for_even_when_configured(
    bootstrap: str, topics: TopicFactory, tmp_path: Path, status_map: Path
) -> None:
    """METRICA_TIMEZONE equal to the counter's zone: starts, dates in that zone, no warning."""
    names = topics.crm_topics(1)
    with SandboxServer(
        tokens=[TOKEN], counter_ids=[COUNTER], port=0, timezone="Asia/Vladivostok"
    ) as sandbox:
        crm.push_status_map(sandbox.url)
        env = service_env(
            bootstrap=bootstrap,
            sandbox_url=sandbox.url,
            store_url=f"sqlite:///{tmp_path / 'state.db'}",
            topics=names,
            status_map=status_map,
            metrica_timezone="Asia/Vladivostok",
        )
        logs = _ready_then_stopped(env, tmp_path)
    lines = _lines(logs)
    loud = [line for line in lines if line["level"] in ("warning", "error")]
    assert not [line for line in loud if "TIMEZONE" in line["event"]], loud
    assert next(line for line in lines if line["event"] == "running")["timezone"] == (
        "Asia/Vladivostok"
    )


async def _until(predicate: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_an_unpushed_status_map_holds_the_service_not_ready_until_it_is_pushed(
    bootstrap: str,
    topics: TopicFactory,
    tmp_path: Path,
    status_map: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service_module, "SETUP_RETRY_S", 0.5)
    settings = topics.crm_settings(
        1,
        metrica_counter_id=COUNTER,
        metrica_token=TOKEN,
        store_url=f"sqlite:///{tmp_path / 'state.db'}",
        status_map_file=status_map,
        metrics_host="127.0.0.1",
        batch_linger_ms=100,
    )
    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], port=0) as fresh:
        settings = settings.model_copy(update={"metrica_api_url": fresh.url})
        # A lead already waits in Kafka: it must not go out before the statuses are known.
        with Producer({"bootstrap.servers": bootstrap}) as producer:
            lead = {
                "event_id": "startup-lead-1",
                "occurred_at": int(time.time() * 1000) - 60_000,
                "lead_id": "L1",
                "deal_id": "D1",
                "client": {"uniq_id": "c1", "name": None, "phones": [], "emails": []},
                "metrica_client_id": "1712345678901234567",
                "yclid": None,
                "utm": None,
                "consent": True,
            }
            producer.send(
                settings.topic_lead_created, b"L1", CODEC.encode("crm.events.LeadCreated", lead)
            )
        service = Service(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop, health_port=0))
        try:
            await _until(lambda: service.setup_error is not None, 30, "the status map check")
            ready, reason = service.ready()
            assert not ready
            assert reason.startswith(
                "setup error: status map differs from the counter's order statuses "
                "(missing: new, qualified, won, lost, junk): " + SCHEMA_SYNC
            ), reason
            assert _setup_error() == 1
            assert service.alive() == (True, "ok")
            await asyncio.sleep(1.5)  # several re-checks: still held, nothing consumed or sent
            assert service.runners == {}
            assert not service.started.is_set()
            assert fresh.uploads(COUNTER) == []

            await asyncio.to_thread(crm.push_status_map, fresh.url)  # the operator's schema-sync
            await _until(lambda: service.ready()[0], 60, "ready once the map is pushed")
            assert _setup_error() == 0
            await _until(lambda: bool(fresh.orders(COUNTER)), 60, "the held lead's order")
            assert [o["order_status"] for o in fresh.orders(COUNTER)] == ["new"]
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)


def test_schema_sync_on_start_pushes_the_map_then_runs(
    bootstrap: str, topics: TopicFactory, tmp_path: Path, status_map: Path
) -> None:
    names = topics.crm_topics(1)
    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], port=0) as fresh:
        env = service_env(
            bootstrap=bootstrap,
            sandbox_url=fresh.url,
            store_url=f"sqlite:///{tmp_path / 'state.db'}",
            topics=names,
            status_map=status_map,
            metrica_schema_sync_on_start="true",
        )
        service = ServiceProcess(env, tmp_path / "service.log").start()
        try:
            wait_until(lambda: get(service.metrics_port, "/readyz")[0] == 200, 60, "ready")
            statuses = _order_statuses(fresh)
        finally:
            assert service.terminate() == 0, service.logs()[-3000:]
    assert statuses == {
        "new": "IN_PROGRESS",
        "qualified": "OTHER",
        "won": "PAID",
        "lost": "CANCELLED",
        "junk": "SPAM",
    }
    pushed = [
        line for line in _lines(service.logs()) if line["event"].startswith("status map pushed")
    ]
    assert len(pushed) == 1, pushed
    assert pushed[0]["in_sync"] is True, pushed


def test_the_built_in_map_needs_no_push(
    bootstrap: str, topics: TopicFactory, tmp_path: Path
) -> None:
    """Without STATUS_MAP_FILE the statuses are Metrica's predefined ones: nothing to push."""
    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], port=0) as fresh:
        env = service_env(
            bootstrap=bootstrap,
            sandbox_url=fresh.url,
            store_url=f"sqlite:///{tmp_path / 'state.db'}",
            topics=topics.crm_topics(1),
            status_map=Path("unused"),
        )
        del env["STATUS_MAP_FILE"]
        _ready_then_stopped(env, tmp_path)
