"""The service under test as a real process: ``metrica-bridge run`` with environment variables,
started, stopped with SIGTERM, or killed with SIGKILL, like an orchestrator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from metrica_bridge.kafka.broker import free_port
from tests.support.kafka import TEST_CONSUMER_PROPERTIES

TOKEN = "sandbox-token-" + "x" * 20
COUNTER = 42

STATUS_MAP = """\
initial_status: new
paid_status: won
statuses:
  new:       {id: new, type: IN_PROGRESS, humanized: "Новый"}
  qualified: {id: qualified, type: OTHER, humanized: "Качественный лид", goals: [good_lead]}
  won:       {id: won, type: PAID, humanized: "Оплачен"}
  lost:      {id: lost, type: CANCELLED, humanized: "Отменён"}
  junk:      {id: junk, type: SPAM, humanized: "Спам"}
"""


def service_env(
    *,
    bootstrap: str,
    sandbox_url: str,
    store_url: str,
    topics: Mapping[str, str],
    status_map: Path,
    **extra: object,
) -> dict[str, str]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        **{"KAFKA_" + k.upper().replace(".", "_"): v for k, v in TEST_CONSUMER_PROPERTIES.items()},
        "METRICA_API_URL": sandbox_url,
        "METRICA_COUNTER_ID": str(COUNTER),
        "METRICA_TOKEN": TOKEN,
        "STORE_URL": store_url,
        "STATUS_MAP_FILE": str(status_map),
        "TOPIC_LEAD_CREATED": topics["lead-created"],
        "TOPIC_DEAL_STATUS_CHANGED": topics["deal-status-changed"],
        "TOPIC_PAYMENT_RECEIVED": topics["payment-received"],
        "CONSUMER_GROUP_PREFIX": f"mb-test-{uuid.uuid4().hex[:8]}",
        "METRICS_HOST": "127.0.0.1",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "BATCH_LINGER_MS": "200",
        "METRICA_REQUESTS_PER_SECOND": "20",
        # The pace of a real 5,000-request day would make every test wait; tests of the pace
        # set their own budget and quota day.
        "METRICA_DAILY_BUDGET": "10000000",
        "RETRY_BUDGET_S": "20",
        "SHUTDOWN_TIMEOUT_S": "15",
    }
    env.update({k.upper(): str(v) for k, v in extra.items()})
    return env


@dataclass
class ServiceProcess:
    env: dict[str, str]
    log_path: Path
    args: list[str] = field(default_factory=list)
    metrics_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        self.metrics_port = free_port()
        env = {**os.environ, **self.env, "METRICS_PORT": str(self.metrics_port)}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "metrica_bridge.cli", "run", *self.args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def answering(self) -> bool:
        """``/healthz`` answers: the process is past start-up and handles SIGTERM itself."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=2).is_success
        except httpx.HTTPError:
            return False

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        # A signal that lands before the handlers are installed kills the process outright.
        wait_until(lambda: self.answering() or not self.alive(), 30, "the service to start")
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.25
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
