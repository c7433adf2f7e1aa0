"""``python -m benchmarks.run [--quick] [--only NAME ...]``: measure metrica-bridge on this machine.

Everything runs here, in one run, so ratios compare numbers taken under the same (noisy) load:
the embedded tansu broker, the Metrica sandbox (in this process, on a thread) and the service as
its own process (``metrica-bridge run``, configured by environment variables like in production).

Scenarios (``--only`` picks some; the default runs all, in this order):

* ``engine``   — the engine's CPU per event in a process of its own, without broker or HTTP
  (:mod:`benchmarks.engine_cpu`), three runs: the number that tells a code change from the host's
  noise, which moves end-to-end throughput by 10-15 % between runs minutes apart;
* ``ceiling``  — raw confluent-kafka consumption of the backlog, then the same plus Avro decoding
  with our :class:`~metrica_bridge.codec.Codec`: the most any consumer of these topics could do;
* ``sqlite`` / ``postgres`` — the service on the same backlog (produced before it starts), from
  its first fetch to the last upload the sandbox accepted;
* ``sqlite-x2`` / ``postgres-x2`` — the same with two instances (one per core; one consumer group
  per topic shared by both, one store), Metrica's 3 parallel requests and the request rate
  split between them, as an operator scales on one host;
* ``naive`` — one request per event, no batching, one worker, on a small sample;
* ``steady`` — 1,000 events/s for a minute, occurred_at = produce time: end-to-end latency;
* ``quota-day`` — one whole quota day compressed into about ten minutes (``METRICA_QUOTA_DAY_S``
  ≈ 600, a budget of 1,000 requests enforced by the sandbox too), traffic following a day's
  curve (night trough, afternoon peak ten times higher): requests, freshness and backlog per
  simulated hour, the day's requests against the budget, dead letters;
* ``profile`` — py-spy samples the service on a backlog: where the time goes;
* ``memory`` — peak RSS of the service while it works through a 1,000,000-event backlog,
  read at every 100,000 events consumed.

Raw numbers go to a JSON file (``--out``) and a summary to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from metrica_bridge.codec import Codec
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.events import EventKind
from metrica_bridge.kafka.admin import delete_topics, ensure_topics, list_topics
from metrica_bridge.kafka.broker import EmbeddedBroker, free_port
from metrica_bridge.kafka.producer import Producer
from metrica_bridge.kafka.settings import PRODUCER_DEFAULTS, layered
from metrica_bridge.metrica.pace import reserve_requests
from metrica_bridge.metrica.status_map import parse_status_map
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.sandbox.quotas import QuotaLimits
from metrica_bridge.simulate import SimulatedMessage, SimulationConfig, generate, produce
from metrica_bridge.simulate.model import _Generator

SCENARIOS = (
    "engine",
    "ceiling",
    "sqlite",
    "postgres",
    "sqlite-x2",
    "postgres-x2",
    "naive",
    "steady",
    "quota-day",
    "profile",
    "memory",
)
# Backlog scenarios: (store, instances of `metrica-bridge run` in one consumer group per topic).
BACKLOG_RUNS = {
    "sqlite": ("sqlite", 1),
    "postgres": ("postgres", 1),
    "sqlite-x2": ("sqlite", 2),
    "postgres-x2": ("postgres", 2),
}
PARTITIONS = 6  # what the service creates (service.DEFAULT_PARTITIONS)
COUNTER = 4242
TOKEN = "bench-" + uuid.uuid4().hex
STATUS_MAP_FILE = PROJECT_ROOT / "deploy" / "status_map.example.yaml"

# Our emulator's quotas, raised: the benchmark measures the service, and the service's own
# governor (METRICA_REQUESTS_PER_SECOND, 3 parallel, the daily budget) still applies.
SANDBOX_LIMITS = QuotaLimits(parallel=3, per_second=1_000, daily=10_000_000)
METRICA_PER_SECOND = 30  # Metrica's own cap: 30 requests/s per IP (metrica-api.md §12)

# The service as an operator would run it against Metrica: production defaults except the
# request rate (Metrica allows 30/s per IP; our default of 5/s is deliberately conservative)
# and the tansu timing traps (group joins, fetch wait; /work/shared/tansu-notes.md).
BASE_ENV: dict[str, str] = {
    "KAFKA_SESSION_TIMEOUT_MS": "6000",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    "KAFKA_FETCH_WAIT_MAX_MS": "100",
    "METRICA_REQUESTS_PER_SECOND": "20",
    # Throughput scenarios measure the service, not the day's budget (the quota-day scenario
    # does): a budget whose pace never binds.
    "METRICA_DAILY_BUDGET": "10000000",
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
    "SHUTDOWN_TIMEOUT_S": "20",
}


@dataclass(frozen=True)
class Sizes:
    backlog: int
    naive: int
    steady_rate: int
    steady_s: int
    profile: int
    memory: int
    memory_step: int
    quota_day_s: int  # the compressed quota day's target length (N is picked near it)
    quota_day_budget: int
    quota_day_events: int
    engine: int  # events of each engine CPU run


# -- the quota-day scenario ----------------------------------------------------------------
# Metrica allows 5,000 requests per login per quota day (metrica-api.md §12): spent evenly, a
# pace of 5,000 / 86,400 = 0.058 requests/s. What the governor reacts to is the pace B / N, not
# the count, so the compressed day keeps a budget that gives a meaningful pace in ten minutes:
# 1,000 requests in a ~600 s day (1.7 requests/s, 1.5 after the reserve), scaled with N for
# --quick. Far fewer than the day's events (about 60,000): one request per event could never
# carry them.
QUOTA_DAY_BUDGET = 1_000
QUOTA_DAY_RESERVE = 0.1  # METRICA_BUDGET_RESERVE, the service's default, set explicitly
QUOTA_DAY_PEAK_TO_TROUGH = 10  # the afternoon peak's rate over the night trough's
QUOTA_DAY_TROUGH_HOUR, QUOTA_DAY_PEAK_HOUR = 4, 16
QUOTA_DAY_LEAD_S = (15.0, 30.0)  # start the service this long before the day begins
REAL_DAY_S, REAL_DAILY_BUDGET = 86_400, 5_000

FULL = Sizes(
    200_000, 2_000, 1_000, 60, 100_000, 1_000_000, 100_000, 600, QUOTA_DAY_BUDGET, 60_000, 60_000
)
QUICK = Sizes(
    20_000,
    200,
    1_000,
    15,
    20_000,
    100_000,
    10_000,
    120,
    QUOTA_DAY_BUDGET * 120 // 600,
    12_000,
    20_000,
)
ENGINE_RUNS = 3


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- metrics -------------------------------------------------------------------------------


Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((dict(sample.labels), float(sample.value)))
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for got, value in samples.get(name, [])
        if all(got.get(k) == v for k, v in labels.items())
    )


def by_label(samples: Samples, name: str, *keys: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for labels, value in samples.get(name, []):
        out["/".join(labels.get(k, "") for k in keys)] += value
    return dict(out)


def histogram(samples: Samples, name: str) -> list[tuple[float, float]]:
    """Cumulative ``(le, count)`` over every label set."""
    buckets: dict[float, float] = defaultdict(float)
    for labels, value in samples.get(name + "_bucket", []):
        buckets[float(labels["le"])] += value
    return sorted(buckets.items())


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Linear interpolation inside the bucket, like PromQL's histogram_quantile."""
    if not buckets or buckets[-1][1] == 0:
        return None
    target = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= target:
            if le == float("inf"):
                return lower  # beyond the last finite bucket: a lower bound
            return lower + (le - lower) * ((target - below) / max(count - below, 1e-12))
        lower, below = le, count
    return None


def share_at_most(buckets: list[tuple[float, float]], bound: float) -> float | None:
    for le, count in buckets:
        if le == bound and buckets[-1][1]:
            return count / buckets[-1][1]
    return None


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"n": len(ordered), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0)}


# -- the service as a process ----------------------------------------------------------------


@dataclass
class ServiceProcess:
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    rss_kib: int = 0
    hwm_kib: int = 0
    _sampler: threading.Thread | None = None

    def start(self) -> ServiceProcess:
        self.port = free_port()
        env = {**os.environ, **self.env, "METRICS_PORT": str(self.port)}
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "metrica_bridge.cli", "run"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _sample(self) -> None:
        while self.alive():
            self.memory()
            time.sleep(0.2)

    def memory(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in KiB; VmHWM is the kernel's peak resident set."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.rss_kib = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    self.hwm_kib = max(self.hwm_kib, int(line.split()[1]))
        return self.rss_kib, self.hwm_kib

    def cpu_s(self) -> float:
        """User + system CPU seconds the service has used so far."""
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return 0.0

    def metrics(self) -> Samples:
        return scrape(self.port)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the service exited; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the service did not become ready; see {self.log_path}")

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@dataclass
class ServiceGroup:
    """Instances of the service in the same consumer groups, measured as one."""

    members: list[ServiceProcess]

    @property
    def pid(self) -> int:
        return self.members[0].pid

    @property
    def log_path(self) -> Path:
        return self.members[0].log_path

    @property
    def hwm_kib(self) -> int:
        """The largest instance's peak: what one process needs."""
        return max(m.hwm_kib for m in self.members)

    def alive(self) -> bool:
        return all(m.alive() for m in self.members)

    def memory(self) -> tuple[int, int]:
        each = [m.memory() for m in self.members]
        return max(r for r, _ in each), max(h for _, h in each)

    def cpu_s(self) -> float:
        return sum(m.cpu_s() for m in self.members)

    def metrics(self) -> Samples:
        """Every instance's samples together: counters and histograms add up."""
        merged: Samples = defaultdict(list)
        for member in self.members:
            for name, values in member.metrics().items():
                merged[name].extend(values)
        return merged

    def wait_ready(self, timeout: float = 90) -> None:
        for member in self.members:
            member.wait_ready(timeout)

    def stop(self) -> None:
        for member in self.members:
            member.stop()


# -- the bench -------------------------------------------------------------------------------


@dataclass
class Bench:
    sizes: Sizes
    workdir: Path
    broker: EmbeddedBroker = field(init=False)
    codec: Codec = field(init=False)
    results: dict[str, Any] = field(default_factory=dict)
    _pg: Any = None
    _topics: list[str] = field(default_factory=list)

    def __enter__(self) -> Bench:
        self.broker = EmbeddedBroker(log_path=self.workdir / "tansu.log").start()
        self.codec = Codec.from_dir(PROJECT_ROOT / "schemas")
        return self

    def __exit__(self, *exc: object) -> None:
        self.codec.close()
        self.broker.stop()
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.cleanup()

    # -- building blocks -----------------------------------------------------------------
    def topics(self, prefix: str) -> dict[EventKind, str]:
        names = {kind: f"{prefix}-{kind.value}-{uuid.uuid4().hex[:6]}" for kind in EventKind}
        wanted = {n: PARTITIONS for n in names.values()} | {f"{n}.dlq": 1 for n in names.values()}
        ensure_topics(self.broker.bootstrap, wanted)
        self._topics.extend(wanted)
        return names

    def drop_topics(self, names: Mapping[EventKind, str]) -> None:
        """tansu keeps everything in memory, with no retention: delete what a scenario used."""
        doomed = [n for name in names.values() for n in (name, f"{name}.dlq")]
        delete_topics(self.broker.bootstrap, doomed)

    def producer(self) -> Producer:
        config = layered(PRODUCER_DEFAULTS, {"bootstrap.servers": self.broker.bootstrap})
        return Producer(config, with_defaults=False, futures=False)

    def produce(self, names: Mapping[EventKind, str], count: int, seed: int) -> dict[str, Any]:
        log(f"producing {count:,} simulated events")
        config = SimulationConfig(count=count, seed=seed, topics=dict(names), clients=20_000)
        with self.producer() as producer:
            stats = produce(generate(config, self.codec), producer)
        log(f"  produced in {stats.elapsed_s:.1f} s ({stats.rate:,.0f}/s)")
        return {"events": stats.messages, "bytes": stats.bytes, "seconds": stats.elapsed_s}

    def sandbox(
        self, limits: QuotaLimits = SANDBOX_LIMITS, quota_day_s: int | None = None
    ) -> SandboxServer:
        server = SandboxServer(
            tokens=[TOKEN], counter_ids=[COUNTER], limits=limits, port=0, quota_day_s=quota_day_s
        ).start()
        statuses = parse_status_map(
            yaml.safe_load(STATUS_MAP_FILE.read_text("utf-8"))
        ).to_order_statuses()
        httpx.post(
            f"{server.url}/cdp/api/v1/counter/{COUNTER}/schema/order_statuses",
            json={"order_statuses": statuses},
            headers={"Authorization": f"OAuth {TOKEN}"},
        ).raise_for_status()
        return server

    def store_url(self, kind: str, name: str) -> str:
        if kind == "sqlite":
            return f"sqlite:///{self.workdir / (name + '.db')}"
        if self._pg is None:
            from pgserver import get_server  # type: ignore[attr-defined]  # a dev dependency

            base = Path(tempfile.mkdtemp(prefix="mb-bench-pg-"))
            base.chmod(0o755)  # as root, postgres runs as its own user
            self._pg = get_server(base / "pgdata", cleanup_mode="delete")
        import psycopg

        database = f"bench_{name}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(self._pg.get_uri(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        return str(self._pg.get_uri(database=database))

    def service(
        self,
        names: Mapping[EventKind, str],
        sandbox: SandboxServer,
        store_url: str,
        instances: int = 1,
        **env: object,
    ) -> ServiceGroup:
        split: dict[str, str] = {}
        if instances > 1:
            # Metrica's limits are per token across every process: share them out.
            rate = float(BASE_ENV["METRICA_REQUESTS_PER_SECOND"]) / instances
            split = {
                "METRICA_MAX_PARALLEL": str(max(1, 3 // instances)),
                "METRICA_REQUESTS_PER_SECOND": f"{rate:g}",
            }
        values = {
            **BASE_ENV,
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "METRICA_API_URL": sandbox.url,
            "METRICA_COUNTER_ID": str(COUNTER),
            "METRICA_TOKEN": TOKEN,
            "STORE_URL": store_url,
            "STATUS_MAP_FILE": str(STATUS_MAP_FILE),
            "TOPIC_LEAD_CREATED": names[EventKind.LEAD_CREATED],
            "TOPIC_DEAL_STATUS_CHANGED": names[EventKind.DEAL_STATUS_CHANGED],
            "TOPIC_PAYMENT_RECEIVED": names[EventKind.PAYMENT_RECEIVED],
            "CONSUMER_GROUP_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
            **split,
            **{k.upper(): str(v) for k, v in env.items()},
        }
        return ServiceGroup(
            [
                ServiceProcess(values, self.workdir / f"service-{uuid.uuid4().hex[:6]}.log").start()
                for _ in range(instances)
            ]
        )

    # -- measuring one service run on a backlog ------------------------------------------
    def drain(
        self,
        service: ServiceGroup,
        sandbox: SandboxServer,
        expected: int,
        *,
        on_progress: Callable[[int], None] | None = None,
        quiet_s: float = 4.0,
        timeout_s: float = 3_600,
    ) -> dict[str, Any]:
        """Wait for every event to be handled and the uploads to stop; return the timeline."""
        deadline = time.monotonic() + timeout_s
        first_fetch: float | None = None
        cpu_at_first = 0.0
        while first_fetch is None:
            if not service.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the service never consumed; see {service.log_path}")
            try:
                consumed = total(service.metrics(), "metrica_bridge_events_consumed_total")
            except httpx.HTTPError:  # not listening yet
                consumed = 0
            if consumed > 0:
                first_fetch = time.time()
                cpu_at_first = service.cpu_s()
            else:
                time.sleep(0.05)
        uploads_seen, quiet_since = -1, time.monotonic()
        last_report = 0.0
        while True:
            if not service.alive():
                raise RuntimeError(f"the service died; see {service.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError("timed out draining the backlog")
            samples = service.metrics()
            consumed = int(total(samples, "metrica_bridge_events_consumed_total"))
            in_flight = total(samples, "metrica_bridge_in_flight_events")
            if on_progress is not None:
                on_progress(consumed)
            if time.monotonic() - last_report > 15:
                last_report = time.monotonic()
                rss, _ = service.memory()
                log(
                    f"  consumed {consumed:,}/{expected:,}, in flight {in_flight:,.0f}, "
                    f"RSS {rss / 1024:,.0f} MiB"
                )
            uploads = len(sandbox.uploads(COUNTER))
            if uploads != uploads_seen:
                uploads_seen, quiet_since = uploads, time.monotonic()
            if (
                consumed >= expected
                and in_flight == 0
                and time.monotonic() - quiet_since >= quiet_s
            ):
                break
            time.sleep(0.5)
        accepted = [u for u in sandbox.uploads(COUNTER) if u["status"] == "accepted"]
        last_ack = max(
            datetime.fromisoformat(u["received_at"].replace("Z", "+00:00")).timestamp()
            for u in accepted
        )
        cpu = service.cpu_s() - cpu_at_first
        return {"first_fetch": first_fetch, "last_ack": last_ack, "uploads": accepted, "cpu_s": cpu}

    def summarize(
        self,
        events: int,
        timeline: dict[str, Any],
        samples: Samples,
        service: ServiceGroup,
    ) -> dict[str, Any]:
        seconds = timeline["last_ack"] - timeline["first_fetch"]
        uploads = timeline["uploads"]
        requests = by_label(samples, "metrica_bridge_metrica_requests_total", "endpoint", "result")
        data_requests = sum(
            v for k, v in requests.items() if k.split("/")[0] in ("contacts", "orders")
        )
        records = sum(u["elements_count"] for u in uploads)
        by_endpoint: dict[str, list[int]] = defaultdict(list)
        for u in uploads:
            by_endpoint[u["endpoint"]].append(u["elements_count"])
        return {
            "events": events,
            "seconds": round(seconds, 2),
            "events_per_s": round(events / seconds, 1) if seconds > 0 else None,
            "requests": requests,
            "requests_all": sum(requests.values()),
            "data_requests": data_requests,
            "requests_per_10k_events": round(sum(requests.values()) * 10_000 / events, 1),
            "accepted_uploads": len(uploads),
            "records_uploaded": records,
            "records_per_upload": round(records / len(uploads), 1) if uploads else None,
            "records_per_upload_by_endpoint": {
                e: round(sum(c) / len(c), 1) for e, c in by_endpoint.items()
            },
            "outcomes": by_label(samples, "metrica_bridge_events_processed_total", "outcome"),
            "peak_rss_mib": round(service.hwm_kib / 1024, 1),
            # Includes the few idle seconds after the last upload while the drain is confirmed.
            "service_cpu_s": round(timeline["cpu_s"], 1),
            "service_cpu_per_event_ms": round(1000 * timeline["cpu_s"] / events, 3),
        }

    def backlog_run(
        self,
        names: Mapping[EventKind, str],
        events: int,
        store: str,
        label: str,
        *,
        profile_to: Path | None = None,
        memory_step: int = 0,
        instances: int = 1,
        **env: object,
    ) -> dict[str, Any]:
        sandbox = self.sandbox()
        service: ServiceGroup | None = None
        spy: subprocess.Popen[bytes] | None = None
        marks: dict[int, dict[str, float]] = {}

        def progress(consumed: int) -> None:
            if memory_step and service is not None:
                mark = consumed // memory_step * memory_step
                if mark and mark not in marks:
                    rss, hwm = service.memory()
                    marks[mark] = {"rss_mib": round(rss / 1024, 1), "hwm_mib": round(hwm / 1024, 1)}

        try:
            url = self.store_url(store, label)
            log(
                f"{label}: the service ({store}, {instances} instance(s)) on a backlog of"
                f" {events:,} events"
            )
            service = self.service(names, sandbox, url, instances, **env)
            if profile_to is not None:
                spy = start_py_spy(service.pid, profile_to)
            timeline = self.drain(service, sandbox, events, on_progress=progress)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
                spy = None
            result = self.summarize(events, timeline, service.metrics(), service)
            result["instances"] = instances
            if marks:
                result["memory_marks"] = marks
            log(
                f"  {result['events_per_s']:,} events/s, {result['records_per_upload']} "
                f"records/upload, peak RSS {result['peak_rss_mib']} MiB"
            )
            return result
        finally:
            if spy is not None:
                spy.kill()
            if service is not None:
                service.stop()
            sandbox.stop()

    # -- scenarios -----------------------------------------------------------------------
    def ceiling(self, names: Mapping[EventKind, str], events: int) -> dict[str, Any]:
        log("ceiling: raw consumption, then consumption + Avro decoding")
        raw = consume_all(self.broker.bootstrap, names, events, None)
        decode = self.codec.decode
        decoded = consume_all(self.broker.bootstrap, names, events, decode)
        out = {"consume_only": raw, "consume_and_decode": decoded}
        log(f"  {raw['events_per_s']:,} msg/s raw, {decoded['events_per_s']:,} with decoding")
        return out

    def steady(self) -> dict[str, Any]:
        sizes = self.sizes
        count = sizes.steady_rate * sizes.steady_s
        names = self.topics("steady")
        sandbox = self.sandbox()
        service: ServiceGroup | None = None
        first_event_ms: dict[str, int] = {}
        try:
            url = self.store_url("sqlite", "steady")
            service = self.service(names, sandbox, url)
            service.wait_ready()
            log(f"steady: {sizes.steady_rate:,} events/s for {sizes.steady_s} s")
            started_ms = int(time.time() * 1000)
            # occurred_at runs from now at the produce rate, so occurred_at = produce time.
            config = SimulationConfig(
                count=count,
                seed=7,
                topics=dict(names),
                now_ms=started_ms + sizes.steady_s * 1000,
                span_days=sizes.steady_s / 86_400,
                clients=20_000,
            )

            def remember(messages: Iterator[SimulatedMessage]) -> Iterator[SimulatedMessage]:
                for m in messages:
                    facts = m.facts or {}
                    deal = facts.get("deal_id")
                    if deal is not None and deal not in first_event_ms:
                        first_event_ms[deal] = int(facts["occurred_at_ms"])
                    yield m

            with self.producer() as producer:
                stats = produce(
                    remember(generate(config, self.codec)), producer, rate=sizes.steady_rate
                )
            log(f"  produced {stats.messages:,} in {stats.elapsed_s:.1f} s ({stats.rate:,.0f}/s)")
            self.drain(service, sandbox, count)
            samples = service.metrics()
            buckets = histogram(samples, "metrica_bridge_end_to_end_latency_seconds")
            linger_s = 2.0  # the default BATCH_LINGER_MS, which this run keeps
            # Independent of the service's own clock: when each deal's order first showed up
            # in the sandbox, minus the deal's first event (= when it was produced).
            first_seen = []
            for order in sandbox.orders(COUNTER):
                history = order.get("history") or []
                start = first_event_ms.get(order["id"])
                if history and start is not None:
                    seen = datetime.fromisoformat(history[0]["received_at"].replace("Z", "+00:00"))
                    first_seen.append(seen.timestamp() - start / 1000)
            result = {
                "rate": sizes.steady_rate,
                "seconds": sizes.steady_s,
                "produced": stats.messages,
                "produce_rate": round(stats.rate, 1),
                "linger_s": linger_s,
                "histogram": buckets,
                "p50_s": quantile(buckets, 0.5),
                "p90_s": quantile(buckets, 0.9),
                "p99_s": quantile(buckets, 0.99),
                "share_within_linger_plus_1s": share_at_most(buckets, linger_s + 1),
                "order_first_seen_s": percentiles(first_seen),
                "requests_per_10k_events": round(
                    total(samples, "metrica_bridge_metrica_requests_total") * 10_000 / count, 1
                ),
                "outcomes": by_label(samples, "metrica_bridge_events_processed_total", "outcome"),
                "peak_rss_mib": round(service.hwm_kib / 1024, 1),
            }
            log(
                f"  latency p50 {result['p50_s']}, p99 {result['p99_s']} s (histogram); "
                f"order first seen {result['order_first_seen_s']}"
            )
            return result
        finally:
            if service is not None:
                service.stop()
            sandbox.stop()
            self.drop_topics(names)

    def quota_day(self) -> dict[str, Any]:
        sizes = self.sizes
        budget = sizes.quota_day_budget
        # Quota days are the intervals [k·N, (k+1)·N) of Unix time, for the service's governor
        # and for the sandbox alike (aligned on the epoch, as Metrica's reset at 00:00 GMT is
        # with N = 86,400), so a day cannot start whenever the benchmark likes. Instead N is
        # picked near the target so that its next multiple is a few seconds away: the service
        # and the sandbox start before it, the traffic begins on it, and the run covers exactly
        # one whole quota day [k·N, (k+1)·N), budget untouched at its start.
        while (picked := pick_quota_day(sizes.quota_day_s, time.time())) is None:
            time.sleep(1)
        day_s, day_start = picked
        day_end = day_start + day_s
        day_index = round(day_start) // day_s
        hour_s = day_s / 24
        rates = day_curve(sizes.quota_day_events, day_s)
        times, hour_of = day_schedule(rates, day_start, hour_s)
        count = len(times)
        log(
            f"quota-day: N = {day_s} s (quota day {day_index}, starts in "
            f"{day_start - time.time():.0f} s), budget {budget:,} requests, {count:,} events, "
            f"{min(rates):.1f}-{max(rates):.1f} events/s"
        )
        names = self.topics("quota-day")
        limits = QuotaLimits(parallel=3, per_second=METRICA_PER_SECOND, daily=budget)
        sandbox = self.sandbox(limits, quota_day_s=day_s)
        service: ServiceGroup | None = None
        try:
            service = self.service(
                names,
                sandbox,
                self.store_url("sqlite", "quota-day"),
                metrica_quota_day_s=day_s,
                metrica_daily_budget=budget,
                metrica_budget_reserve=QUOTA_DAY_RESERVE,
            )
            service.wait_ready(timeout=max(1.0, day_start - time.time()))
            running = service
            if time.time() >= day_start:
                raise RuntimeError("the service was not ready before the quota day began")
            config = SimulationConfig(
                count=count,
                seed=23,
                topics=dict(names),
                now_ms=int(day_end * 1000),
                span_days=day_s / 86_400,
                clients=20_000,
            )
            stream = DayStream(config, self.codec, [int(t * 1000) for t in times]).run()

            produced = [0] * 24
            late_leads = [0] * 24  # identity_late leads: occurred_at long before (freshness())
            first_event: dict[str, tuple[float, str]] = {}  # deal → (produce time, story)
            hourly: list[dict[str, Any]] = []  # at each hour boundary, 00:00 … 24:00
            ticks: list[dict[str, Any]] = []  # every second
            next_tick = day_start

            def sample(with_sandbox: bool = False) -> dict[str, Any]:
                shot = quota_snapshot(running.metrics())
                shot["produced"] = sum(produced)
                if with_sandbox:
                    stats = sandbox.stats()
                    shot["sandbox_requests"] = sandbox_requests(stats, day_index)
                    shot["sandbox_requests_all"] = sandbox_requests(stats, None)
                ticks.append(shot)
                return shot

            def sample_due() -> float:
                """Takes whatever sample is due; returns when the next one is."""
                nonlocal next_tick
                now = time.time()
                boundary = day_start + len(hourly) * hour_s
                if len(hourly) <= 24 and now >= boundary:
                    shot = sample(with_sandbox=True)
                    hourly.append(shot)
                    next_tick = now + 1.0
                    if len(hourly) > 1:
                        h = len(hourly) - 2
                        log(
                            f"  {h:02d}:00 {produced[h]:>6,} events in, "
                            f"{shot['requests'] - hourly[-2]['requests']:>4.0f} requests, "
                            f"lag {shot['lag']:,.0f}, pace {shot['pace']:.2f}/s, "
                            f"budget left {shot['remaining']:,.0f}, waiting {shot['waiting']:.0f}"
                        )
                elif now >= next_tick:
                    sample()
                    next_tick = now + 1.0
                if len(hourly) <= 24:
                    return min(next_tick, day_start + len(hourly) * hour_s)
                return next_tick

            def wait_until(when: float) -> None:
                while (now := time.time()) < when:
                    time.sleep(max(0.0, min(when, sample_due()) - now))
                sample_due()

            wait_until(day_start)
            with self.producer() as producer:
                for i, message in enumerate(stream):
                    wait_until(times[i])
                    producer.send(message.topic, message.key, message.value)
                    hour = hour_of[i]
                    produced[hour] += 1
                    if message.story == "identity_late" and message.kind == "LeadCreated":
                        late_leads[hour] += 1
                    deal = (message.facts or {}).get("deal_id")
                    if deal is not None and deal not in first_event:
                        first_event[deal] = (times[i], message.story or "")
                # The gauges of the day's last moment (the 24:00 sample is in the next day).
                wait_until(day_end - 0.3)
                sample()
                wait_until(day_end)
                producer.flush(60)
            total_produced = sum(produced)

            # Drain: the next quota day has begun (a fresh budget); nothing more is produced.
            log(f"  the day is over; draining ({total_produced:,} events produced)")
            deadline = time.monotonic() + max(300.0, day_s)
            sent_seen, quiet_since = -1.0, time.monotonic()
            while True:
                if not running.alive():
                    raise RuntimeError(f"the service died; see {running.log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError("timed out draining after the quota day")
                final = sample(with_sandbox=True)
                if final["sandbox_requests_all"] != sent_seen:
                    sent_seen, quiet_since = final["sandbox_requests_all"], time.monotonic()
                if (
                    final["consumed"] >= total_produced
                    and final["in_flight"] == 0
                    and time.monotonic() - quiet_since >= 4
                ):
                    break
                time.sleep(1.0)
            running.stop()
            governor = read_quota_days(self.workdir / "quota-day.db")
            dlq_messages = topic_sizes(
                self.broker.bootstrap, [f"{name}.dlq" for name in names.values()]
            )
            return summarize_quota_day(
                day_s=day_s,
                day_index=day_index,
                day_start=day_start,
                budget=budget,
                rates=rates,
                produced=produced,
                late_leads=late_leads,
                hourly=hourly,
                ticks=ticks,
                final=final,
                uploads=sandbox.uploads(COUNTER),
                orders=sandbox.orders(COUNTER),
                first_event=first_event,
                sandbox_stats=sandbox.stats(),
                governor=governor,
                dlq_messages=dlq_messages,
                peak_rss_mib=round(running.hwm_kib / 1024, 1),
            )
        finally:
            if service is not None:
                service.stop()
            sandbox.stop()
            self.drop_topics(names)


# -- the quota day ---------------------------------------------------------------------------


def pick_quota_day(
    target_s: int,
    now: float,
    *,
    spread: float = 0.1,
    lead_s: tuple[float, float] = QUOTA_DAY_LEAD_S,
) -> tuple[int, float] | None:
    """``(N, start)``: a quota-day length within ``spread`` of ``target_s`` whose next day
    (the next multiple of N in Unix time) starts ``lead_s`` from ``now``, the closest to the
    target; None when no N fits now (a second later one will)."""
    fits: list[tuple[int, int, float]] = []
    for n in range(round(target_s * (1 - spread)), round(target_s * (1 + spread)) + 1):
        start = float((math.floor(now / n) + 1) * n)
        if lead_s[0] <= start - now <= lead_s[1]:
            fits.append((abs(n - target_s), n, start))
    if not fits:
        return None
    _, n, start = min(fits)
    return n, start


def day_curve(events: int, day_s: float) -> list[float]:
    """Events/s in each of the 24 simulated hours: a cosine with its trough at 04:00 and its
    peak, ``QUOTA_DAY_PEAK_TO_TROUGH`` times the trough, at 16:00, ``events`` in all."""
    ratio = QUOTA_DAY_PEAK_TO_TROUGH
    shape = [
        1 + (ratio - 1) * (1 - math.cos(2 * math.pi * (h - QUOTA_DAY_TROUGH_HOUR) / 24)) / 2
        for h in range(24)
    ]
    scale = events / day_s / (sum(shape) / 24)
    return [scale * s for s in shape]


def day_schedule(
    rates: Sequence[float], day_start: float, hour_s: float
) -> tuple[list[float], list[int]]:
    """When each event is produced (Unix time, evenly spaced within its hour at the hour's
    rate) and its hour."""
    times: list[float] = []
    hours: list[int] = []
    for h, rate in enumerate(rates):
        n = round(rate * hour_s)
        start = day_start + h * hour_s
        times.extend(start + (j + 0.5) * hour_s / n for j in range(n))
        hours.extend([h] * n)
    return times, hours


class DayStream(_Generator):
    """The simulator's stream (same stories, same seeding) with each event's occurred_at taken
    from a schedule instead of evenly spaced: event ``i`` happens at ``times_ms[i]``, when the
    benchmark produces it, so occurred_at = produce time although the rate changes by the hour.
    (Generating hour by hour instead would cut the stories in progress at every hour.)"""

    def __init__(self, config: SimulationConfig, codec: Codec, times_ms: Sequence[int]) -> None:
        super().__init__(config, codec)
        self.times_ms = times_ms

    def tick(self) -> int:
        self.clock_ms = self.times_ms[self.emitted]
        return self.clock_ms


def quota_snapshot(samples: Samples) -> dict[str, Any]:
    """What the quota-day scenario reads from the service's /metrics."""

    def value(name: str) -> float:
        return total(samples, "metrica_bridge_" + name)

    return {
        "t": time.time(),
        "requests": value("metrica_requests_total"),
        "requests_by": by_label(
            samples, "metrica_bridge_metrica_requests_total", "endpoint", "result"
        ),
        "histogram": histogram(samples, "metrica_bridge_end_to_end_latency_seconds"),
        "dlq": value("dlq_records_total"),
        "lag": value("consumer_lag"),  # every partition of the three topics
        "waiting": value("metrica_quota_waiting"),
        "pace": value("metrica_pace_requests_per_second"),
        "remaining": value("metrica_daily_quota_remaining"),
        "projected": value("metrica_requests_projected"),
        "reset_s": value("metrica_quota_reset_seconds"),
        "consumed": value("events_consumed_total"),
        "in_flight": value("in_flight_events"),
        "parked": value("parked_events"),
        "released": value("events_released_total"),
        "outcomes": by_label(samples, "metrica_bridge_events_processed_total", "outcome"),
    }


def sandbox_requests(stats: Mapping[str, Any], day: int | None) -> int:
    """Requests the sandbox admitted for our counter in quota day ``day`` (None: every day)."""
    days: dict[str, int] = stats.get("requests_by_quota_day", {}).get(str(COUNTER), {})
    if day is None:
        return sum(days.values())
    return days.get(str(day), 0)


def bucket_delta(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    prior = dict(before)
    return [(le, count - prior.get(le, 0.0)) for le, count in after]


def count_at(buckets: list[tuple[float, float]], bound: float) -> float:
    return next((count for le, count in buckets if le == bound), 0.0)


def freshness(buckets: list[tuple[float, float]], late_leads: int) -> dict[str, Any]:
    """Quantiles of an end-to-end latency histogram (delta) without the late-identity leads.

    The simulator's ``identity_late`` leads carry the time the lead really happened, 10 to 120
    minutes before the deal events that were published first: observations of 600 s and more
    that are no delivery delay (see docs/benchmarks.md, Steady load). They are removed from the
    top of the histogram, at most as many as there are observations above 300 s."""
    if not buckets or buckets[-1][1] == 0:
        return {"n": 0, "late_identity_leads_removed": 0, "p50_s": None, "p99_s": None}
    observed = buckets[-1][1]
    above = observed - count_at(buckets, 300.0)
    removed = min(float(late_leads), above)
    clean = [(le, min(count, observed - removed)) for le, count in buckets]

    def q(x: float) -> float | None:
        got = quantile(clean, x)
        return None if got is None else round(got, 2)

    return {
        "n": int(observed - removed),
        "late_identity_leads_removed": int(removed),
        "above_300s_left": int(above - removed),
        "p50_s": q(0.5),
        "p90_s": q(0.9),
        "p99_s": q(0.99),
    }


def read_quota_days(path: Path) -> dict[str, int]:
    """The service's own count per quota day, from its SQLite store (table ``quota``)."""
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn,
    ):
        return {str(day): int(used) for day, used in conn.execute("SELECT day, used FROM quota")}
    return {}


def topic_sizes(bootstrap: str, topics: Sequence[str]) -> dict[str, int]:
    """Messages in each topic (high − low watermark over its partitions)."""
    partitions = list_topics(bootstrap)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
    try:
        sizes: dict[str, int] = {}
        for topic in topics:
            sizes[topic] = 0
            for p in range(partitions.get(topic, 0)):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                sizes[topic] += high - low
        return sizes
    finally:
        consumer.close()


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def summarize_quota_day(
    *,
    day_s: int,
    day_index: int,
    day_start: float,
    budget: int,
    rates: Sequence[float],
    produced: Sequence[int],
    late_leads: Sequence[int],
    hourly: list[dict[str, Any]],
    ticks: list[dict[str, Any]],
    final: dict[str, Any],
    uploads: list[dict[str, Any]],
    orders: list[dict[str, Any]],
    first_event: Mapping[str, tuple[float, str]],
    sandbox_stats: Mapping[str, Any],
    governor: Mapping[str, int],
    dlq_messages: Mapping[str, int],
    peak_rss_mib: float,
) -> dict[str, Any]:
    hour_s = day_s / 24
    day_end = day_start + day_s
    start, end = hourly[0], hourly[24]
    accepted = [(_at(u["received_at"]), u) for u in uploads if u["status"] == "accepted"]

    # Independent of the service's clock: when each deal's order first showed up in the
    # sandbox, minus when the deal's first event was produced (= its occurred_at). Deals whose
    # lead is published after their events (identity_late) or never (anonymous) wait for the
    # CRM, not for the service: left out.
    seen_by_hour: list[list[float]] = [[] for _ in range(24)]
    for order in orders:
        history = order.get("history") or []
        first = first_event.get(order["id"])
        if not history or first is None or first[1] in ("identity_late", "anonymous"):
            continue
        hour = min(23, max(0, int((first[0] - day_start) // hour_s)))
        seen_by_hour[hour].append(_at(history[0]["received_at"]) - first[0])

    rows: list[dict[str, Any]] = []
    late_pending = 0  # late-identity leads produced and not yet seen delivered
    for h in range(24):
        a, b = hourly[h], hourly[h + 1]
        lo, hi = day_start + h * hour_s, day_start + (h + 1) * hour_s
        window = [t for t in ticks if a["t"] < t["t"] <= b["t"]]
        # Gauges as the hour ends: the 24:00 sample is already in the next quota day.
        before_reset = [t for t in window if t["t"] < day_end]
        g = b if b["t"] < day_end or not before_reset else before_reset[-1]
        records = [u["elements_count"] for at, u in accepted if lo <= at < hi]
        # A lead produced near the end of an hour may be delivered in the next one.
        late_pending += late_leads[h]
        fresh = freshness(bucket_delta(b["histogram"], a["histogram"]), late_pending)
        late_pending -= fresh.get("late_identity_leads_removed", 0)
        rows.append(
            {
                "hour": f"{h:02d}:00",
                "rate": round(rates[h], 1),
                "events_in": produced[h],
                "requests": int(b["requests"] - a["requests"]),
                "sandbox_requests": b["sandbox_requests"] - a["sandbox_requests"],
                "uploads": len(records),
                "records_per_upload": round(sum(records) / len(records), 1) if records else None,
                "freshness": fresh,
                "order_first_seen_s": percentiles(seen_by_hour[h]),
                "lag_end": int(b["lag"]),
                "lag_max": int(max((t["lag"] for t in window), default=b["lag"])),
                "backlog_end": int(b["produced"] - b["consumed"]),
                "pace_end": round(g["pace"], 3),
                "remaining_end": int(g["remaining"]),
                "projected_end": round(g["projected"]),
                "waiting_samples": sum(1 for t in window if t["waiting"] > 0),
                "samples": len(window),
            }
        )

    def requests_between(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        return {
            k: v - a["requests_by"].get(k, 0.0)
            for k, v in b["requests_by"].items()
            if v - a["requests_by"].get(k, 0.0)
        }

    day_ticks = [t for t in ticks if start["t"] <= t["t"] <= end["t"]]
    drain_ticks = [t for t in ticks if t["t"] > end["t"]]
    sandbox_days = sandbox_stats.get("requests_by_quota_day", {}).get(str(COUNTER), {})
    outcomes = final["outcomes"]
    total_produced = sum(produced)
    handled = sum(outcomes.values()) - final["released"]
    day_records = [u["elements_count"] for at, u in accepted if day_start <= at < day_end]
    after_uploads = [at for at, _ in accepted if at >= day_end]
    seen_all = [s for hour in seen_by_hour for s in hour]
    paced = budget - reserve_requests(budget, QUOTA_DAY_RESERVE)
    real_paced = REAL_DAILY_BUDGET - reserve_requests(REAL_DAILY_BUDGET, QUOTA_DAY_RESERVE)
    day = {
        "events_produced": total_produced,
        "requests_service": int(end["requests"] - start["requests"]),
        "requests_service_by": requests_between(start, end),
        "requests_governor": governor.get(f"{day_index}@{day_s}s"),
        "requests_sandbox": sandbox_days.get(str(day_index), 0),
        "budget": budget,
        "refused_by_sandbox": sandbox_stats.get("refused_by_quota_day", {}).get(str(day_index), {}),
        "uploads_accepted": len(day_records),
        "records_per_upload": round(sum(day_records) / len(day_records), 1)
        if day_records
        else None,
        "waiting_samples": sum(1 for t in day_ticks if t["waiting"] > 0),
        "lag_max": int(max(t["lag"] for t in day_ticks)),
        "backlog_max": int(max(t["produced"] - t["consumed"] for t in day_ticks)),
        "freshness": freshness(bucket_delta(end["histogram"], start["histogram"]), sum(late_leads)),
        "order_first_seen_s": percentiles(seen_all),
    }
    after = {
        "requests_service": int(final["requests"] - end["requests"]),
        "requests_service_by": requests_between(end, final),
        "requests_governor": governor.get(f"{day_index + 1}@{day_s}s"),
        "requests_sandbox": sandbox_days.get(str(day_index + 1), 0),
        "lag_max": int(max((t["lag"] for t in drain_ticks), default=0)),
        "last_upload_after_day_end_s": round(max(after_uploads) - day_end, 1)
        if after_uploads
        else None,
        "drain_s": round(final["t"] - end["t"], 1),
        "freshness_incl_drain": freshness(
            bucket_delta(final["histogram"], start["histogram"]), sum(late_leads)
        ),
    }
    delivery = {
        "produced": total_produced,
        "consumed": int(final["consumed"]),
        "outcomes": outcomes,
        "released_from_park": int(final["released"]),
        "still_parked": int(final["parked"]),
        "in_flight": int(final["in_flight"]),
        # Each event has one final outcome; an event released from the park is counted again.
        "unaccounted": int(total_produced - handled),
        "dead_lettered_metric": int(final["dlq"]),
        "dlq_topic_messages": dict(dlq_messages),
        "orders_in_sandbox": len(orders),
        "deals_produced": len(first_event),
    }
    limit = {
        "paced_requests": paced,
        "interval_per_endpoint_s": round(day_s / (paced / 2), 3),
        "interval_per_endpoint_no_reserve_s": round(day_s / (budget / 2), 3),
        "real_interval_per_endpoint_s": round(REAL_DAY_S / (REAL_DAILY_BUDGET / 2), 1),
        "real_interval_with_reserve_s": round(REAL_DAY_S / (real_paced / 2), 1),
    }
    return {
        "quota_day_s": day_s,
        "quota_day_index": day_index,
        "day_start": datetime.fromtimestamp(day_start, UTC).isoformat(),
        "hour_s": round(hour_s, 3),
        "budget": budget,
        "reserve": QUOTA_DAY_RESERVE,
        "sandbox_limits": {"parallel": 3, "per_second": METRICA_PER_SECOND, "daily": budget},
        "peak_to_trough": QUOTA_DAY_PEAK_TO_TROUGH,
        "hours": rows,
        "day": day,
        "after_reset": after,
        "delivery": delivery,
        "limit": limit,
        "requests_by_quota_day_sandbox": dict(sandbox_days),
        "requests_by_quota_day_governor": dict(governor),
        "series": [
            [
                round(t["t"] - day_start, 1),
                int(t["lag"]),
                int(t["produced"] - t["consumed"]),
                round(t["pace"], 3),
                int(t["remaining"]),
                int(t["waiting"]),
            ]
            for t in ticks
        ],
        "series_columns": ["t_s", "lag", "backlog", "pace", "remaining", "waiting"],
        "peak_rss_mib": peak_rss_mib,
    }


def log_quota_day(result: dict[str, Any]) -> None:
    """The scenario's readable summary."""
    log(
        f"  quota day N = {result['quota_day_s']} s, budget {result['budget']:,}, "
        f"reserve {result['reserve']:.0%}"
    )
    log(
        "  hour   ev/s  events  req svc/sbx  rec/upl  p50 s  p99 s  seen p50  p99    lag  lagmax"
        "  pace/s  left  wait"
    )
    for row in result["hours"]:
        f, seen = row["freshness"], row["order_first_seen_s"]
        log(
            f"  {row['hour']} {row['rate']:6.1f} {row['events_in']:7,} "
            f"{row['requests']:5}/{row['sandbox_requests']:<5} "
            f"{row['records_per_upload'] or 0:8.1f} {f['p50_s'] or 0:6.2f} {f['p99_s'] or 0:6.2f} "
            f"{seen.get('p50', 0):9.2f} {seen.get('p99', 0):5.2f} "
            f"{row['lag_end']:6,} {row['lag_max']:7,} {row['pace_end']:7.3f} "
            f"{row['remaining_end']:5,} {row['waiting_samples']:5}"
        )
    day, after, delivery, limit = (
        result["day"],
        result["after_reset"],
        result["delivery"],
        result["limit"],
    )
    log(
        f"  day: requests {day['requests_service']:,} (service) / {day['requests_sandbox']:,} "
        f"(sandbox) / {day['requests_governor']} (governor's store) of {day['budget']:,}; "
        f"freshness p50 {day['freshness']['p50_s']} s, p99 {day['freshness']['p99_s']} s; "
        f"order first seen {day['order_first_seen_s']}; max lag {day['lag_max']:,}"
    )
    log(
        f"  after the reset: {after['requests_service']} requests (service), "
        f"{after['requests_sandbox']} (sandbox), drained in {after['drain_s']} s"
    )
    log(
        f"  delivery: produced {delivery['produced']:,}, consumed {delivery['consumed']:,}, "
        f"outcomes {delivery['outcomes']}, unaccounted {delivery['unaccounted']}, "
        f"dead-lettered {delivery['dead_lettered_metric']} (DLQ topics "
        f"{sum(delivery['dlq_topic_messages'].values())})"
    )
    log(
        f"  limit: {limit['interval_per_endpoint_s']} s between requests per endpoint "
        f"(real day: {limit['real_interval_per_endpoint_s']} s)"
    )


def consume_all(
    bootstrap: str,
    names: Mapping[EventKind, str],
    expected: int,
    decode: Callable[[bytes], object] | None,
) -> dict[str, Any]:
    """Read every partition from the start without a group (no join wait), timing from the first
    message to the last."""
    partitions = list_topics(bootstrap)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-ceiling-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": "false",
            "fetch.wait.max.ms": "100",
        }
    )
    consumer.assign(
        [
            TopicPartition(name, p, OFFSET_BEGINNING)
            for name in names.values()
            for p in range(partitions[name])
        ]
    )
    count = 0
    first: float | None = None
    deadline = time.monotonic() + 600
    try:
        while count < expected and time.monotonic() < deadline:
            for message in consumer.consume(10_000, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(error.str())
                if first is None:
                    first = time.perf_counter()
                if decode is not None:
                    decode(message.value())  # type: ignore[arg-type]
                count += 1
        last = time.perf_counter()
    finally:
        consumer.close()
    seconds = last - (first or last)
    return {
        "events": count,
        "seconds": round(seconds, 3),
        "events_per_s": round(count / seconds, 1) if seconds else None,
    }


# -- profiling -------------------------------------------------------------------------------


def start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(binary).exists():
        log("  py-spy not found (pip install py-spy): no profile")
        return None
    return subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--output",
            str(out),
            "--rate",
            "50",
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


AREAS: tuple[tuple[str, str], ...] = (
    ("confluent_kafka", "kafka client (confluent_kafka)"),
    ("fastavro", "avro decoding (fastavro)"),
    ("metrica_bridge/codec/", "metrica_bridge.codec"),
    ("sqlite3", "sqlite3"),
    ("psycopg", "psycopg"),
    ("metrica_bridge/store/", "metrica_bridge.store"),
    ("httpx", "http client (httpx/httpcore)"),
    ("httpcore", "http client (httpx/httpcore)"),
    ("json/", "json"),
    ("structlog", "logging (structlog/logging)"),
    ("logging/", "logging (structlog/logging)"),
    ("metrica_bridge/logs", "logging (structlog/logging)"),
    ("prometheus_client", "prometheus_client"),
    ("pydantic", "pydantic"),
    ("metrica_bridge/engine/", "metrica_bridge.engine"),
    ("metrica_bridge/steps/", "metrica_bridge.steps"),
    ("metrica_bridge/metrica/", "metrica_bridge.metrica"),
    ("metrica_bridge/events", "metrica_bridge.events (parse/validate)"),
    ("metrica_bridge/normalize", "metrica_bridge.normalize"),
    ("asyncio/", "asyncio machinery"),
)


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Self time per function and inclusive time per area, from py-spy's collapsed stacks."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        samples += count
        frames = stack.split(";")
        threads[frames[0] if frames[0].startswith("thread") else "main"] += count
        leaf = frames[-1]
        self_time[_frame(leaf)] += count
        seen = set()
        for frame in frames:
            for needle, area in AREAS:
                if needle in frame:
                    seen.add(area)
                    break
        for area in seen:
            inclusive[area] += count
    if not samples:
        return {"samples": 0}
    return {
        "samples": samples,
        "self_top": [(f, round(100 * c / samples, 1)) for f, c in self_time.most_common(top)],
        "inclusive_by_area": [(a, round(100 * c / samples, 1)) for a, c in inclusive.most_common()],
    }


def _frame(frame: str) -> str:
    """``func (path/to/module.py:123)`` → ``func (module.py)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else where
    return f"{name} ({short})"


def engine_cpu(events: int) -> dict[str, Any]:
    """:mod:`benchmarks.engine_cpu`, ``ENGINE_RUNS`` times, each in a fresh process."""
    runs = []
    for n in range(ENGINE_RUNS):
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.engine_cpu", str(events)],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        log(f"engine run {n + 1}: {runs[-1]['cpu_per_event_us']} µs CPU per event")
    per_event = sorted(r["cpu_per_event_us"] for r in runs)
    return {"runs": runs, "median_cpu_per_event_us": per_event[len(per_event) // 2]}


# -- main ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--only", action="append", choices=SCENARIOS, help="repeatable")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, stores)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting for every run (e.g. WORKER_CONCURRENCY=256); repeatable",
    )
    args = parser.parse_args(argv)
    for item in args.env:
        name, _, value = item.partition("=")
        BASE_ENV[name.upper()] = value
    wanted = args.only or list(SCENARIOS)
    sizes = QUICK if args.quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="mb-bench-"))
    workdir.chmod(0o755)
    out = args.out or workdir / "results.json"
    started = time.time()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join(["python -m benchmarks.run", *(argv or sys.argv[1:])]),
        "sizes": sizes.__dict__,
        "service_env": BASE_ENV,
    }

    def save() -> None:
        results["elapsed_s"] = round(time.time() - started, 1)
        out.write_text(json.dumps(results, indent=2, default=str))

    log(f"work dir {workdir}; results → {out}")
    try:
        if "engine" in wanted:
            results["engine"] = engine_cpu(sizes.engine)
            save()
        with Bench(sizes, workdir) as bench:
            if {"ceiling", *BACKLOG_RUNS} & set(wanted):
                names = bench.topics("backlog")
                results["backlog_produce"] = bench.produce(names, sizes.backlog, seed=11)
                if "ceiling" in wanted:
                    results["ceiling"] = bench.ceiling(names, sizes.backlog)
                    save()
                for label, (store, instances) in BACKLOG_RUNS.items():
                    if label in wanted:
                        results[label] = bench.backlog_run(
                            names, sizes.backlog, store, label, instances=instances
                        )
                        save()
                bench.drop_topics(names)
            if "naive" in wanted:
                names = bench.topics("naive")
                bench.produce(names, sizes.naive, seed=13)
                results["naive"] = bench.backlog_run(
                    names,
                    sizes.naive,
                    "sqlite",
                    "naive",
                    batch_max_records=1,
                    batch_linger_ms=0,
                    worker_concurrency=1,
                    metrica_requests_per_second=30,  # Metrica's own cap: the best naive can do
                )
                bench.drop_topics(names)
                save()
            if "steady" in wanted:
                results["steady"] = bench.steady()
                save()
            if "quota-day" in wanted:
                results["quota-day"] = bench.quota_day()
                log_quota_day(results["quota-day"])
                save()
            if "profile" in wanted:
                names = bench.topics("profile")
                bench.produce(names, sizes.profile, seed=17)
                raw = workdir / "profile.txt"
                run = bench.backlog_run(names, sizes.profile, "sqlite", "profile", profile_to=raw)
                run["profile"] = summarize_profile(raw) if raw.exists() else {}
                results["profile"] = run
                bench.drop_topics(names)
                save()
            if "memory" in wanted:
                names = bench.topics("memory")
                results["memory_produce"] = bench.produce(names, sizes.memory, seed=19)
                results["memory"] = bench.backlog_run(
                    names, sizes.memory, "sqlite", "memory", memory_step=sizes.memory_step
                )
                bench.drop_topics(names)
                save()
    finally:
        save()
        if not args.keep:
            for path in workdir.iterdir():
                if path.suffix in (".db", ".db-wal", ".db-shm"):
                    path.unlink(missing_ok=True)
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
