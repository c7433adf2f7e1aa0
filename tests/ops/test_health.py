"""``/healthz`` and ``/readyz``: the health server itself, then the real service — ready once its
partitions are assigned, not ready (with the reason) while Metrica refuses the token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from metrica_bridge.codec import Codec
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.health import HealthServer
from metrica_bridge.kafka.producer import Producer
from metrica_bridge.logs import register_secret
from metrica_bridge.sandbox import SandboxServer
from tests.ops.support import Scrape, get, scrape
from tests.support import crm
from tests.support.kafka import TopicFactory
from tests.support.stack import COUNTER, STATUS_MAP, TOKEN, ServiceProcess, service_env, wait_until


def _ok() -> tuple[bool, str]:
    return True, "ok"


def test_health_server_binds_the_given_host_and_answers_each_path() -> None:
    secret = "y0_AgAAAAAtest-secret-token-0123456789"
    register_secret(secret)

    def ready() -> tuple[bool, str]:
        return False, f"setup error: OAuth {secret} refused for +7 (999) 123-45-67"

    def broken() -> tuple[bool, str]:
        raise RuntimeError(f"boom {secret}")

    server = HealthServer(0, broken, ready, host="127.0.0.1").start()
    try:
        assert server.host == "127.0.0.1"
        url = f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{url}/metrics").status_code == 200
        assert "metrica_bridge_events_consumed_total" in httpx.get(f"{url}/metrics").text
        not_ready = httpx.get(f"{url}/readyz?verbose=1")
        assert not_ready.status_code == 503
        assert not_ready.text.startswith("setup error: ")
        assert secret not in not_ready.text
        assert "123-45-67" not in not_ready.text
        dead = httpx.get(f"{url}/healthz")
        assert (dead.status_code, dead.text) == (503, "check failed: RuntimeError\n")
        assert httpx.get(f"{url}/nothing").status_code == 404
    finally:
        server.stop()


def _env(
    bootstrap: str, sandbox: SandboxServer, topics: TopicFactory, tmp_path: Path
) -> tuple[dict[str, str], dict[str, str]]:
    names = topics.many({"lead-created": 2, "deal-status-changed": 2, "payment-received": 2})
    topics.created.extend(f"{name}.dlq" for name in names.values())
    status_map = tmp_path / "status_map.yaml"
    status_map.write_text(STATUS_MAP)
    env = service_env(
        bootstrap=bootstrap,
        sandbox_url=sandbox.url,
        store_url=f"sqlite:///{tmp_path / 'state.db'}",
        topics=names,
        status_map=status_map,
        # An upload held by a setup error is handed back on SIGTERM after this long.
        shutdown_timeout_s=3,
    )
    return env, names


def _metrics(port: int) -> Scrape:
    m = scrape(port)
    assert m is not None
    return m


@pytest.fixture
def sandbox() -> Any:
    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], port=0) as server:
        crm.push_status_map(server.url)  # schema-sync first: the service waits for it
        yield server


def test_ready_once_partitions_are_assigned_then_not_while_the_token_is_refused(
    bootstrap: str, topics: TopicFactory, sandbox: SandboxServer, tmp_path: Path
) -> None:
    env, names = _env(bootstrap, sandbox, topics, tmp_path)
    service = ServiceProcess(env, tmp_path / "service.log").start()
    port = service.metrics_port
    try:
        wait_until(lambda: get(port, "/healthz")[0] == 200, 30, "/healthz answers")
        answers: list[tuple[int, str]] = []

        def ready() -> bool:
            answers.append(get(port, "/readyz"))
            return answers[-1][0] == 200

        wait_until(ready, 60, "/readyz 200", poll=0.1)
        # Joining a consumer group takes seconds: the service said why it was not ready yet.
        waiting = [body for status, body in answers if status == 503]
        assert waiting, answers
        assert all(b.startswith(("starting", "no partitions assigned for")) for b in waiting)
        assert answers[-1] == (200, "ok\n")
        m = _metrics(port)
        assert m.by("assigned_partitions", "topic") == {t: 2.0 for t in names.values()}
        assert m.value("setup_error") == 0

        # The token is revoked: the next upload is refused, sending stops, not ready.
        sandbox.set_faults(reject_token=TOKEN)
        codec = Codec.from_dir(PROJECT_ROOT / "schemas")
        lead = {
            "event_id": "lead-setup-1",
            "occurred_at": 1_700_000_000_000,
            "lead_id": "L1",
            "deal_id": None,
            "client": {"uniq_id": "c1", "name": None, "phones": [], "emails": []},
            "metrica_client_id": "1712345678901234567",
            "yclid": None,
            "utm": None,
            "consent": True,
        }
        with Producer({"bootstrap.servers": bootstrap}) as producer:
            producer.send(
                names["lead-created"], b"L1", codec.encode("crm.events.LeadCreated", lead)
            )
        wait_until(lambda: get(port, "/readyz")[0] == 503, 30, "/readyz 503")
        status, body = get(port, "/readyz")
        assert status == 503
        assert body.startswith("setup error: HTTP 403"), body
        assert TOKEN not in body
        m = _metrics(port)
        assert m.value("setup_error") == 1
        assert m.value("metrica_requests_total", endpoint="contacts", result="setup") >= 1
        assert TOKEN not in m.text
        # Alive: a restart cannot fix a token, so the liveness probe must not restart it.
        assert get(port, "/healthz")[0] == 200
    finally:
        assert service.terminate() == 0, service.logs()[-3000:]
    assert TOKEN not in service.logs()


def test_token_refused_at_start_up_keeps_the_process_up_and_not_ready(
    bootstrap: str, topics: TopicFactory, sandbox: SandboxServer, tmp_path: Path
) -> None:
    sandbox.set_faults(reject_token=TOKEN)
    env, _names = _env(bootstrap, sandbox, topics, tmp_path)
    service = ServiceProcess(env, tmp_path / "service.log").start()
    port = service.metrics_port
    try:
        wait_until(
            lambda: get(port, "/readyz")[1].startswith("setup error:"), 30, "the setup error"
        )
        status, body = get(port, "/readyz")
        assert status == 503
        assert "invalid_token" in body
        assert TOKEN not in body
        assert _metrics(port).value("setup_error") == 1
        assert get(port, "/healthz")[0] == 200
        assert service.alive()
    finally:
        # Stops promptly and cleanly while waiting to ask Metrica again.
        assert service.terminate(timeout=20) == 0, service.logs()[-3000:]
    logs = service.logs()
    assert TOKEN not in logs
    lines = [json.loads(line) for line in logs.splitlines()]
    assert any(line["level"] == "error" and "refuses the token" in line["event"] for line in lines)
