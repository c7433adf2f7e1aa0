"""``metrica-bridge run``: assemble the steps and run one consumer per topic until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from confluent_kafka import KafkaError, KafkaException

from metrica_bridge import events, normalize, runtime
from metrica_bridge.codec import Codec
from metrica_bridge.config import ConfigError, Settings, TimezoneMismatch
from metrica_bridge.engine.align import Alignment
from metrica_bridge.engine.intake import Intake
from metrica_bridge.engine.leases import heartbeat
from metrica_bridge.engine.parking import ParkSweeper
from metrica_bridge.engine.pipeline import Batching, Pipeline
from metrica_bridge.engine.runner import TopicRunner
from metrica_bridge.events import EventKind
from metrica_bridge.health import HealthServer
from metrica_bridge.kafka.admin import ensure_topics, require_topics
from metrica_bridge.kafka.producer import Producer
from metrica_bridge.kafka.settings import for_consumer
from metrica_bridge.logs import get_logger, redact
from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.metrica.errors import MetricaError, RetryExhausted, SetupError
from metrica_bridge.metrica.quota import QuotaGovernor
from metrica_bridge.metrica.schema_sync import (
    compare_order_statuses,
    start_up_mismatches,
    status_map_problem,
    sync_order_statuses,
)
from metrica_bridge.metrica.status_map import StatusMap, StatusMapError, load_status_map
from metrica_bridge.metrics import SETUP_ERROR
from metrica_bridge.steps.batch import RequestLimits
from metrica_bridge.steps.dlq import DeadLetters, dlq_topic
from metrica_bridge.steps.reconcile import Reconciler
from metrica_bridge.steps.send import Sender
from metrica_bridge.store import open_store, sqlite_path
from metrica_bridge.store.base import Store
from metrica_bridge.store.budget import StoreBudget

log = get_logger("metrica_bridge.service")
_T = TypeVar("_T")

DEFAULT_PARTITIONS = 6
SETUP_RETRY_S = 30.0  # first re-check of a start-up setup problem; doubles up to the max
SETUP_RETRY_MAX_S = 900.0  # as the sender's probes: a day of waiting costs ~100 requests
TRANSIENT_RETRY_S = 2.0  # after a counter lookup that ran out of retries
DEPENDENCY_RETRY_S = 1.0  # first retry of an unreachable store or broker at start-up
DEPENDENCY_RETRY_MAX_S = 30.0
STORE_PING_CACHE_S = 1.0  # /readyz pings the store at most this often
TRIM_INTERVAL_S = 1.0  # freed heap memory goes back to the OS this often (runtime.trim_malloc)
HOUSEKEEPING_EVERY_S = 5.0  # the quota gauges refresh this often


class Service:
    def __init__(self, settings: Settings, kinds: Sequence[EventKind] | None = None) -> None:
        self.settings = settings
        self.kinds = list(kinds or EventKind)
        self.runners: dict[str, TopicRunner] = {}
        self.store: Store | None = None
        self.setup_error: str | None = None
        self.waiting_for: str | None = None  # a dependency start-up waits for (the reason)
        self.started = asyncio.Event()
        self._ping_lock = threading.Lock()
        self._ping_ok = False
        self._ping_until = 0.0

    # -- health ------------------------------------------------------------------------------
    def alive(self) -> tuple[bool, str]:
        dead = [t for t, r in self.runners.items() if not r.healthy()]
        return (not dead, f"consumer down: {dead}" if dead else "ok")

    def ready(self) -> tuple[bool, str]:
        if self.setup_error:
            return False, f"setup error: {self.setup_error}"
        if self.waiting_for:
            return False, self.waiting_for
        if not self.started.is_set():
            return False, "starting"
        if not self._store_reachable():
            return False, "store unreachable"
        idle = [t for t, r in self.runners.items() if not r.assigned]
        if idle:
            return False, f"no partitions assigned for {idle}"
        return True, "ok"

    def _store_reachable(self) -> bool:
        """The store's ping, asked at most once per ``STORE_PING_CACHE_S``: every probe and
        scrape of ``/readyz`` would otherwise block a thread on the database."""
        with self._ping_lock:
            if time.monotonic() >= self._ping_until:
                self._ping_ok = self.store is not None and self.store.ping()
                self._ping_until = time.monotonic() + STORE_PING_CACHE_S
            return self._ping_ok

    def _on_setup_error(self, message: str | None) -> None:
        """Sending stopped for a setup problem (``message``), or resumed (None)."""
        self.setup_error = message
        SETUP_ERROR.set(int(message is not None))

    # -- run ---------------------------------------------------------------------------------
    def _preflight(self) -> StatusMap:
        """Every setting checked before anything starts: a missing or invalid one is a
        :class:`ConfigError` naming the variable (one line and exit 1, never a traceback)."""
        s = self.settings
        s.require_metrica()
        s.configured_timezone()  # a METRICA_TIMEZONE that is no zone stops here, first
        _check_store_url(s.store_url)
        try:
            return load_status_map(s.status_map_file)
        except StatusMapError as exc:
            raise ConfigError(f"STATUS_MAP_FILE: {exc}") from None

    async def run(self, stop: asyncio.Event, health_port: int | None = None) -> None:
        """Start everything through one exit stack: whatever fails, at start-up or later, what
        was started is stopped, in reverse order (consumers, pipeline, producer, client, store,
        health server), never a consumer left running against a closed store."""
        s = self.settings
        statuses = self._preflight()
        normalize.set_default_region(s.phone_default_region)  # before any event is parsed
        events.set_max_clock_skew(s.max_clock_skew_s)
        topics = [s.topics()[kind] for kind in self.kinds]
        port = s.metrics_port if health_port is None else health_port
        async with contextlib.AsyncExitStack() as stack:
            try:
                health = HealthServer(port, self.alive, self.ready, host=s.metrics_host)
            except OSError as exc:
                raise ConfigError(
                    f"METRICS_PORT {port} on {s.metrics_host} cannot be bound: "
                    f"{exc.strerror or type(exc).__name__}"
                ) from None
            health.start()
            stack.callback(health.stop)
            store = await self._until_available(
                "the store", lambda: asyncio.to_thread(open_store, s.store_url), stop
            )
            if store is None:
                return
            self.store = store
            stack.callback(store.close)
            codec = Codec.from_dir(s.schemas_dir, s.schema_registry_url)
            if s.create_topics:
                wanted = {t: DEFAULT_PARTITIONS for t in topics} | {dlq_topic(t): 1 for t in topics}
                created = await self._until_available(
                    "Kafka",
                    lambda: asyncio.to_thread(_ensure_topics, s.kafka_common(), wanted),
                    stop,
                )
                if created is None:
                    return
            governor = QuotaGovernor(
                max_parallel=s.metrica_max_parallel,
                requests_per_second=s.metrica_requests_per_second,
                daily_budget=s.metrica_daily_budget,
                reserve=s.metrica_budget_reserve,
                quota_day_s=s.metrica_quota_day_s,
                backend=StoreBudget(store),
            )
            await governor.refresh()
            client = MetricaClient.from_settings(s, governor=governor)
            stack.push_async_callback(client.aclose)
            timezone = await self._counter_timezone(client, stop)
            if timezone is not None and not await self._status_map_agrees(client, statuses, stop):
                timezone = None
            if timezone is None:  # stopped before the start-up checks passed
                return
            if not s.create_topics:
                # Nothing creates them here (CREATE_TOPICS=false): a missing <topic>.dlq would
                # otherwise be found at the first poison record, which then holds its partition.
                dlqs = [dlq_topic(t) for t in topics]
                found = await self._until_available(
                    "the dead-letter topics",
                    lambda: asyncio.to_thread(require_topics, s.kafka_common(), dlqs),
                    stop,
                )
                if found is None:
                    return
            producer = Producer.from_settings(s)
            stack.push_async_callback(asyncio.to_thread, producer.close, 5.0)
            owner = f"mb-{uuid.uuid4().hex[:12]}"
            limits = RequestLimits(s.metrica_max_request_records, s.metrica_max_request_bytes)
            sender = Sender(
                client, store, owner, limits=limits, on_setup_error=self._on_setup_error
            )
            intake = Intake(
                codec,
                s.topics(),
                Alignment(
                    [s.topics()[kind] for kind in EventKind if kind in self.kinds],
                    margin_s=_fetch_wait_s(s.kafka_common()) + 0.1,
                    max_hold_s=s.align_max_wait_s,
                ),
            )
            pipeline = Pipeline(
                intake=intake,
                store=store,
                statuses=statuses,
                send=sender,
                batching=Batching(
                    max_records=s.batch_max_records,
                    max_bytes=s.batch_max_bytes,
                    linger_s=s.batch_linger_ms / 1000,
                    limits=limits,
                    pace_delay=governor.send_delay,
                ),
                dead_letters=DeadLetters(producer),
                timezone=timezone,
                hash_identifiers=s.hash_identifiers,
                owner=owner,
                reconciler=Reconciler(
                    store,
                    client,
                    ZoneInfo(timezone),
                    retry_budget_s=s.retry_budget_s,
                    timeout_s=s.metrica_timeout_s,
                ),
                concurrency=s.worker_concurrency,
            )
            pipeline.start()
            stack.push_async_callback(pipeline.close)
            governor.demand = lambda: pipeline.waiting_to_send() > 0
            background: list[asyncio.Task[None]] = []
            stack.callback(_cancel_all, background)  # after the consumers stopped

            async def stop_runners() -> None:
                pipeline.flush_soon()
                await asyncio.gather(*(r.stop() for r in self.runners.values()))

            stack.push_async_callback(stop_runners)
            for kind in self.kinds:
                topic = s.topics()[kind]
                runner = TopicRunner(
                    topic,
                    s.group_id(kind),
                    for_consumer(s.kafka_common()),
                    intake,
                    pipeline.flush_soon,
                    s,
                )
                await runner.start()
                self.runners[topic] = runner
            sweeper = ParkSweeper(
                intake,
                store,
                list(self.runners),
                owner=owner,
                max_wait_s=s.park_max_wait_s,
                creation_max_wait_s=s.creation_max_wait_s,
            )
            background += [
                asyncio.create_task(sweeper.run(), name="park-sweeper"),
                asyncio.create_task(heartbeat(store, owner), name="lease-heartbeat"),
                asyncio.create_task(self._housekeeping(client), name="housekeeping"),
                asyncio.create_task(_trim_malloc(), name="malloc-trim"),
            ]
            runtime.tune_gc()
            self.started.set()
            log.info("running", topics=topics, timezone=timezone, store=s.store_url.split(":")[0])
            await stop.wait()
            log.info("stopping: draining in-flight events", timeout_s=s.shutdown_timeout_s)
            started = time.monotonic()
            await stack.aclose()
            log.info("stopped", drained_in_s=round(time.monotonic() - started, 2))

    async def _until_available(
        self, what: str, attempt: Callable[[], Awaitable[_T]], stop: asyncio.Event
    ) -> _T | None:
        """``attempt()``'s result once a dependency that may come back (PostgreSQL, the Kafka
        cluster) answers; None if stopped first. Meanwhile: alive, not ready (``/readyz`` says
        what it waits for), one log line per try, again after ``DEPENDENCY_RETRY_S`` doubling
        up to ``DEPENDENCY_RETRY_MAX_S``. A configuration error is no reason to wait: raised."""
        retry_s = DEPENDENCY_RETRY_S
        while True:
            try:
                result = await attempt()
            except ConfigError:
                raise
            except Exception as exc:
                problem = _brief(exc)
                self.waiting_for = f"waiting for {what}: {problem}"
                log.error(
                    f"{what} is unreachable at start-up; retrying",
                    error=problem,
                    retry_in_s=retry_s,
                )
            else:
                self.waiting_for = None
                return result
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_s)
                return None
            retry_s = min(retry_s * 2, DEPENDENCY_RETRY_MAX_S)

    async def _counter_timezone(self, client: MetricaClient, stop: asyncio.Event) -> str | None:
        """The zone dates are rendered in (None: stopped first): the counter's own
        ``time_zone_name``, always asked of Metrica and checked against ``METRICA_TIMEZONE``
        (:meth:`Settings.timezone_for`: another zone raises :class:`TimezoneMismatch`, a
        configuration error that stops the process, unless ``METRICA_TIMEZONE_OVERRIDE``).
        While Metrica refuses the token or the counter, stay up, not ready, with
        ``setup_error`` at 1, so the alert fires and the reason is on ``/readyz`` instead of a
        crash loop; ask again after ``SETUP_RETRY_S``, doubling up to ``SETUP_RETRY_MAX_S``."""
        retry_s = SETUP_RETRY_S
        while True:
            try:
                counter_zone = await client.counter_timezone()
            except SetupError as exc:
                wait_s, retry_s = retry_s, min(retry_s * 2, SETUP_RETRY_MAX_S)
                self._on_setup_error(str(exc))
                log.error(
                    "Metrica refuses the token or counter; consumers not started",
                    error=str(exc),
                    retry_in_s=wait_s,
                )
            except RetryExhausted as exc:
                # Throttled or down past the retry budget: transient, not a setup problem, and
                # no reason to exit (seen in the chaos suite: instances died at start-up).
                log.warning("counter lookup failed; retrying", error=str(exc))
                wait_s = TRANSIENT_RETRY_S
            else:
                self._on_setup_error(None)
                return self._chosen_timezone(counter_zone)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
                return None

    def _chosen_timezone(self, counter_zone: str) -> str:
        s = self.settings
        try:
            zone = s.timezone_for(counter_zone)
        except TimezoneMismatch as exc:
            log.error(
                "METRICA_TIMEZONE differs from the counter's time zone; refusing to start",
                timezone=exc.configured,
                counter_timezone=exc.counter_zone,
                error=str(exc),
            )
            raise
        if zone != counter_zone:
            log.warning(
                "METRICA_TIMEZONE_OVERRIDE: dates are sent in METRICA_TIMEZONE, not in the "
                "counter's time zone; Metrica reads them as the counter's local time",
                timezone=zone,
                counter_timezone=counter_zone,
            )
        return zone

    async def _status_map_agrees(
        self, client: MetricaClient, statuses: StatusMap, stop: asyncio.Event
    ) -> bool:
        """Wait until the counter's ``/schema/order_statuses`` holds every status of the map
        (False: stopped first). With ``METRICA_SCHEMA_SYNC_ON_START`` push the map first (as
        ``metrica-bridge schema-sync``: only what differs, then read back). Until they agree:
        alive, not ready, ``setup_error`` 1, consumers not started (nothing consumed, nothing
        sent), the reason and the command to run on ``/readyz`` and in the log; compare again
        after ``SETUP_RETRY_S``, doubling up to ``SETUP_RETRY_MAX_S``."""
        push = self.settings.metrica_schema_sync_on_start
        retry_s = SETUP_RETRY_S
        while True:
            try:
                if push:
                    report = await sync_order_statuses(client, statuses)
                    diffs, pushed = report.final, report.posted
                    if pushed:
                        log.info(
                            "status map pushed to the counter (METRICA_SCHEMA_SYNC_ON_START)",
                            statuses=len(statuses.metrica_statuses()),
                            in_sync=not start_up_mismatches(diffs),
                        )
                else:
                    diffs, pushed = await compare_order_statuses(client, statuses), False
            except SetupError as exc:
                problem: str | None = str(exc)
                event = "Metrica refuses the token or counter; consumers not started"
            except RetryExhausted as exc:
                log.warning("order statuses lookup failed; retrying", error=str(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), TRANSIENT_RETRY_S)
                    return False
                continue
            except MetricaError as exc:
                problem = f"order statuses: {type(exc).__name__}: {exc}"
                event = "Metrica refused the order statuses request; consumers not started"
            else:
                problem = status_map_problem(diffs, pushed=pushed)
                event = (
                    "status map differs from the counter's order statuses; consumers not started"
                )
            if problem is None:
                self._on_setup_error(None)
                return True
            wait_s, retry_s = retry_s, min(retry_s * 2, SETUP_RETRY_MAX_S)
            self._on_setup_error(problem)
            log.error(event, error=problem, status_map=statuses.source, retry_in_s=wait_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
                return False

    async def _housekeeping(self, client: MetricaClient) -> None:
        """Quota gauge, ledger retention (the lease heartbeat runs apart: engine/leases.py)."""
        assert self.store is not None
        store, retention = self.store, timedelta(days=self.settings.ledger_retention_days)
        next_purge = 0.0
        while True:
            try:
                await client.governor.refresh()  # the budget's gauges, every process's count
                if time.monotonic() >= next_purge:
                    purged = await asyncio.to_thread(
                        store.purge_ledger, datetime.now(UTC) - retention
                    )
                    if purged:
                        log.info("ledger entries past retention purged", count=purged)
                    next_purge = time.monotonic() + 3_600
            except Exception as exc:
                log.warning("housekeeping failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(HOUSEKEEPING_EVERY_S)


def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()


def _check_store_url(url: str) -> None:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        sqlite_path(url)  # a ConfigError naming STORE_URL when malformed
    elif scheme not in ("postgresql", "postgres"):
        raise ConfigError("STORE_URL: use sqlite:///path or postgresql://user@host/db")


def _ensure_topics(config: dict[str, str], wanted: dict[str, int]) -> dict[str, int]:
    """:func:`ensure_topics`, with a property librdkafka refuses as a configuration error
    (waiting would not fix it); the value is left out of the message: it may be a password."""
    try:
        return ensure_topics(config, wanted, timeout_s=10.0)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError._INVALID_ARG:
            detail = re.sub(r'value "[^"]*"', "value", error.str())
            raise ConfigError(f"a KAFKA_* property is refused by librdkafka: {detail}") from None
        raise


def _brief(exc: BaseException) -> str:
    """An exception in one short line, for a log line and ``/readyz``; the log redactor and
    the health server mask any registered secret in it."""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _trim_malloc() -> None:
    while True:
        await asyncio.sleep(TRIM_INTERVAL_S)
        runtime.trim_malloc()  # about a millisecond


def _fetch_wait_s(kafka: dict[str, str]) -> float:
    """How long a fetch may wait at a partition's end (librdkafka's default: 500 ms)."""
    try:
        return int(kafka.get("fetch.wait.max.ms", "500")) / 1000
    except ValueError:
        return 0.5


def run_service(settings: Settings, kinds: Sequence[EventKind] | None = None) -> None:
    """Run until SIGTERM/SIGINT; a second signal, or the drain timeout, stops at once."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        service = Service(settings, kinds)
        task = asyncio.create_task(service.run(stop))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        done, _ = await asyncio.wait({task}, timeout=settings.shutdown_timeout_s + 15)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise SystemExit("shutdown timed out")
        task.result()

    runtime.limit_malloc_arenas()  # before any thread starts
    try:
        asyncio.run(main())
    except ConfigError as exc:
        raise SystemExit(redact(f"configuration error: {exc}")) from None
