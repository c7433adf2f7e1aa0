"""The embedded parts the demo runs: broker, Metrica sandbox, store, and the settings tying them.

Everything listens on 127.0.0.1 and lives in one temporary directory (store, logs), removed on
exit unless asked to keep it; nothing is written inside the repository.
"""

from __future__ import annotations

import contextlib
import importlib
import secrets
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

from metrica_bridge.config import PROJECT_ROOT, Settings
from metrica_bridge.events import EventKind
from metrica_bridge.kafka.admin import ensure_topics
from metrica_bridge.kafka.broker import EmbeddedBroker, free_port
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.sandbox.command import DEFAULT_COUNTER_ID
from metrica_bridge.service import DEFAULT_PARTITIONS
from metrica_bridge.steps.dlq import dlq_topic
from metrica_bridge.store import redact_url

StoreKind = Literal["sqlite", "postgres"]

STATUS_MAP_FILE = PROJECT_ROOT / "deploy" / "status_map.example.yaml"
TIMEZONE = "Europe/Moscow"

# Fast group joins and low produce→consume latency on tansu (tansu-notes.md "Timing traps"), and
# lag statistics every second so the progress view and the "done" check see it move.
DEMO_KAFKA_PROPERTIES: dict[str, str] = {
    "session.timeout.ms": "6000",
    "heartbeat.interval.ms": "500",
    "fetch.wait.max.ms": "100",
    "statistics.interval.ms": "1000",
}


@dataclass(frozen=True)
class Tuning:
    """Service knobs the demo sets differently from production defaults, to look lively."""

    batch_linger_ms: int = 500
    park_max_wait_s: float = 120.0
    worker_concurrency: int = 1_000
    shutdown_timeout_s: float = 3.0
    commit_interval_ms: int = 500
    requests_per_second: float = 20.0
    # A quota day of an hour, the real 5,000 requests in it: the pace of the daily budget binds
    # and shows (batches grow), and a run still ends in minutes, not at 00:00 GMT.
    quota_day_s: int = 3_600


@dataclass
class EmbeddedStack:
    """Start with :meth:`start` (blocking; run it in a thread), always :meth:`close`."""

    store: StoreKind = "sqlite"
    keep_files: bool = False
    tuning: Tuning = field(default_factory=Tuning)
    counter_id: int = DEFAULT_COUNTER_ID
    workdir: Path = field(init=False)
    broker: EmbeddedBroker = field(init=False)
    sandbox: SandboxServer = field(init=False)
    token: str = field(init=False, repr=False)
    store_url: str = field(init=False, repr=False)
    metrics_port: int = field(init=False)
    _postgres: Any = field(init=False, default=None)
    _started: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="metrica-bridge-demo-"))
        # A throw-away token per run: the sandbox accepts only it, and it is never printed.
        self.token = "demo-" + secrets.token_urlsafe(24)
        self.store_url = ""
        self.metrics_port = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / "service.log"

    # -- steps (each blocking; the command runs them in a thread, checking for Ctrl-C between) --
    def start_broker(self) -> None:
        self.broker = EmbeddedBroker(log_path=self.workdir / "tansu.log")
        self.broker.start()
        self._started.append("broker")

    def start_sandbox(self) -> None:
        self.sandbox = SandboxServer(
            tokens=[self.token],
            counter_ids=[self.counter_id],
            timezone=TIMEZONE,
            port=0,
            quota_day_s=self.tuning.quota_day_s,
        )
        self.sandbox.start()
        self._started.append("sandbox")

    def start_store(self) -> None:
        if self.store == "sqlite":
            self.store_url = f"sqlite:///{self.workdir / 'metrica-bridge.db'}"
            return
        # A dev dependency, imported only for --store postgres (and untyped).
        with warnings.catch_warnings():  # platformdirs' XDG_RUNTIME_DIR notice on servers
            warnings.simplefilter("ignore")
            pgserver: Any = importlib.import_module("pgserver")
            # As root, pgserver runs postgres as its own user, which must reach the data dir.
            self.workdir.chmod(0o755)
            self._postgres = pgserver.get_server(self.workdir / "pgdata", cleanup_mode="delete")
        self._started.append("postgres")
        self.store_url = str(self._postgres.get_uri())

    def create_topics(self, settings: Settings) -> None:
        """Before the simulator produces: a produce to a missing topic would auto-create it
        with the broker's default partition count."""
        topics = list(settings.topics().values())
        wanted = {t: DEFAULT_PARTITIONS for t in topics} | {dlq_topic(t): 1 for t in topics}
        ensure_topics(settings.kafka_common(), wanted)

    def settings(self, log_level: str = "INFO") -> Settings:
        if not self.metrics_port:
            self.metrics_port = free_port()
        t = self.tuning
        return Settings(
            kafka_bootstrap_servers=self.broker.bootstrap,
            kafka_properties=dict(DEMO_KAFKA_PROPERTIES),
            metrica_api_url=self.sandbox.url,
            metrica_counter_id=self.counter_id,
            metrica_token=SecretStr(self.token),
            store_url=self.store_url,
            status_map_file=STATUS_MAP_FILE,
            metrics_port=self.metrics_port,
            metrics_host="127.0.0.1",
            topic_lead_created=EventKind.LEAD_CREATED.value,
            topic_deal_status_changed=EventKind.DEAL_STATUS_CHANGED.value,
            topic_payment_received=EventKind.PAYMENT_RECEIVED.value,
            consumer_group_prefix="metrica-bridge-demo",
            log_level=log_level,
            log_format="json",
            batch_linger_ms=t.batch_linger_ms,
            park_max_wait_s=t.park_max_wait_s,
            worker_concurrency=t.worker_concurrency,
            shutdown_timeout_s=t.shutdown_timeout_s,
            commit_interval_ms=t.commit_interval_ms,
            metrica_requests_per_second=t.requests_per_second,
            metrica_quota_day_s=t.quota_day_s,
        )

    # -- what the user may poke at ------------------------------------------------------------
    def endpoints(self) -> list[tuple[str, str]]:
        base = f"{self.sandbox.url}/_sandbox/counters/{self.counter_id}"
        service = f"http://127.0.0.1:{self.metrics_port}"
        return [
            ("Kafka (tansu)", f"{self.broker.bootstrap}  (pid {self.broker.pid})"),
            ("Metrica sandbox", self.sandbox.url),
            ("  orders", f"{base}/orders"),
            ("  contacts", f"{base}/contacts"),
            ("  uploads", f"{base}/uploads"),
            ("  faults", f"{self.sandbox.url}/_sandbox/faults  (GET, or POST JSON)"),
            ("Service metrics", f"{service}/metrics"),
            ("  health", f"{service}/healthz  {service}/readyz"),
            ("Store", self._store_shown()),
            ("Status map", str(STATUS_MAP_FILE.relative_to(PROJECT_ROOT))),
            ("Logs", str(self.log_path) + ("" if self.keep_files else "  (removed on exit)")),
        ]

    def _store_shown(self) -> str:
        if self.store == "sqlite":
            return f"SQLite {self.store_url[len('sqlite:///') :]}"
        return f"PostgreSQL (pgserver) {redact_url(self.store_url)}"

    # -- teardown -----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop what was started, newest first; never raises (it runs on the way out)."""
        for part in reversed(self._started):
            with contextlib.suppress(Exception):
                if part == "broker":
                    self.broker.stop()
                elif part == "sandbox":
                    self.sandbox.stop()
                elif part == "postgres":
                    self._postgres.cleanup()
        self._started.clear()
        if not self.keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)
