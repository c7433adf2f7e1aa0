"""``metrica-bridge run``: assemble the steps and run one consumer per topic until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from metrica_bridge import normalize, runtime
from metrica_bridge.codec import Codec
from metrica_bridge.config import ConfigError, Settings, TimezoneMismatch
from metrica_bridge.engine.align import Alignment
from metrica_bridge.engine.parking import ParkSweeper
from metrica_bridge.engine.pipeline import CLAIM_LEASE_S, LEASE_RENEW_S, Batching, Pipeline
from metrica_bridge.engine.runner import TopicRunner
from metrica_bridge.events import EventKind
from metrica_bridge.health import HealthServer
from metrica_bridge.kafka.admin import ensure_topics
from metrica_bridge.kafka.producer import Producer
from metrica_bridge.kafka.settings import for_consumer
from metrica_bridge.logs import get_logger
from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.metrica.errors import MetricaError, RetryExhausted, SetupError
from metrica_bridge.metrica.quota import QuotaGovernor
from metrica_bridge.metrica.schema_sync import (
    compare_order_statuses,
    start_up_mismatches,
    status_map_problem,
    sync_order_statuses,
)
from metrica_bridge.metrica.status_map import StatusMap, load_status_map
from metrica_bridge.metrics import SETUP_ERROR
from metrica_bridge.steps.batch import RequestLimits
from metrica_bridge.steps.dlq import DeadLetters, dlq_topic
from metrica_bridge.steps.reconcile import Reconciler
from metrica_bridge.steps.send import Sender
from metrica_bridge.store import open_store
from metrica_bridge.store.base import Store
from metrica_bridge.store.budget import StoreBudget

log = get_logger("metrica_bridge.service")

DEFAULT_PARTITIONS = 6
SETUP_RETRY_S = 30.0  # first re-check of a start-up setup problem; doubles up to the max
SETUP_RETRY_MAX_S = 900.0  # as the sender's probes: a day of waiting costs ~100 requests
TRANSIENT_RETRY_S = 2.0  # after a counter lookup that ran out of retries
TRIM_INTERVAL_S = 1.0  # freed heap memory goes back to the OS this often (runtime.trim_malloc)


class Service:
    def __init__(self, settings: Settings, kinds: Sequence[EventKind] | None = None) -> None:
        self.settings = settings
        self.kinds = list(kinds or EventKind)
        self.runners: dict[str, TopicRunner] = {}
        self.store: Store | None = None
        self.setup_error: str | None = None
        self.started = asyncio.Event()

    # -- health ------------------------------------------------------------------------------
    def alive(self) -> tuple[bool, str]:
        dead = [t for t, r in self.runners.items() if not r.healthy()]
        return (not dead, f"consumer down: {dead}" if dead else "ok")

    def ready(self) -> tuple[bool, str]:
        if self.setup_error:
            return False, f"setup error: {self.setup_error}"
        if not self.started.is_set():
            return False, "starting"
        if self.store is None or not self.store.ping():
            return False, "store unreachable"
        idle = [t for t, r in self.runners.items() if not r.assigned]
        if idle:
            return False, f"no partitions assigned for {idle}"
        return True, "ok"

    def _on_setup_error(self, message: str | None) -> None:
        """Sending stopped for a setup problem (``message``), or resumed (None)."""
        self.setup_error = message
        SETUP_ERROR.set(int(message is not None))

    # -- run ---------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, health_port: int | None = None) -> None:
        s = self.settings
        normalize.set_default_region(s.phone_default_region)  # before any event is parsed
        topics = [s.topics()[kind] for kind in self.kinds]
        health = HealthServer(
            s.metrics_port if health_port is None else health_port,
            self.alive,
            self.ready,
            host=s.metrics_host,
        )
        health.start()
        try:
            s.configured_timezone()  # a METRICA_TIMEZONE that is no zone stops here, first
            self.store = await asyncio.to_thread(open_store, s.store_url)
            codec = Codec.from_dir(s.schemas_dir, s.schema_registry_url)
            statuses = load_status_map(s.status_map_file)
            if s.create_topics:
                wanted = {t: DEFAULT_PARTITIONS for t in topics} | {dlq_topic(t): 1 for t in topics}
                await asyncio.to_thread(ensure_topics, s.kafka_common(), wanted)
            governor = QuotaGovernor(
                max_parallel=s.metrica_max_parallel,
                requests_per_second=s.metrica_requests_per_second,
                daily_budget=s.metrica_daily_budget,
                reserve=s.metrica_budget_reserve,
                quota_day_s=s.metrica_quota_day_s,
                backend=StoreBudget(self.store),
            )
            await governor.refresh()
            client = MetricaClient.from_settings(s, governor=governor)
            try:
                timezone = await self._counter_timezone(client, stop)
                if timezone is not None and not await self._status_map_agrees(
                    client, statuses, stop
                ):
                    timezone = None
            except BaseException:
                await client.aclose()
                raise
            if timezone is None:  # stopped before the start-up checks passed
                await client.aclose()
                return
            producer = Producer.from_settings(s)
            owner = f"mb-{uuid.uuid4().hex[:12]}"
            limits = RequestLimits(s.metrica_max_request_records, s.metrica_max_request_bytes)
            sender = Sender(
                client, self.store, owner, limits=limits, on_setup_error=self._on_setup_error
            )
            pipeline = Pipeline(
                store=self.store,
                codec=codec,
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
                topics=s.topics(),
                hash_identifiers=s.hash_identifiers,
                owner=owner,
                reconciler=Reconciler(self.store, client, ZoneInfo(timezone)),
                concurrency=s.worker_concurrency,
                alignment=Alignment(
                    [s.topics()[kind] for kind in EventKind if kind in self.kinds],
                    margin_s=_fetch_wait_s(s.kafka_common()) + 0.1,
                    max_hold_s=s.align_max_wait_s,
                ),
            )
            pipeline.start()
            batcher = pipeline.batcher
            governor.demand = lambda: batcher.waiting() > 0
            for kind in self.kinds:
                topic = s.topics()[kind]
                self.runners[topic] = TopicRunner(
                    topic, s.group_id(kind), for_consumer(s.kafka_common()), pipeline, s
                )
            for runner in self.runners.values():
                await runner.start()
            sweeper = ParkSweeper(
                pipeline,
                list(self.runners),
                max_wait_s=s.park_max_wait_s,
                creation_max_wait_s=s.creation_max_wait_s,
            )
            background = [
                asyncio.create_task(sweeper.run(), name="park-sweeper"),
                asyncio.create_task(self._housekeeping(client, pipeline), name="housekeeping"),
                asyncio.create_task(_trim_malloc(), name="malloc-trim"),
            ]
            runtime.tune_gc()
            self.started.set()
            log.info("running", topics=topics, timezone=timezone, store=s.store_url.split(":")[0])
            await stop.wait()
            log.info("stopping: draining in-flight events", timeout_s=s.shutdown_timeout_s)
            started = time.monotonic()
            batcher.flush_soon()
            await asyncio.gather(*(r.stop() for r in self.runners.values()))
            for task in background:
                task.cancel()
            await pipeline.close()
            await asyncio.to_thread(producer.close, 5.0)
            await client.aclose()
            log.info("stopped", drained_in_s=round(time.monotonic() - started, 2))
        finally:
            health.stop()
            if self.store is not None:
                self.store.close()

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

    async def _housekeeping(self, client: MetricaClient, pipeline: Pipeline) -> None:
        """Lease heartbeat, quota gauge, ledger retention."""
        assert self.store is not None
        store, retention = self.store, timedelta(days=self.settings.ledger_retention_days)
        next_purge = 0.0
        while True:
            try:
                await client.governor.refresh()  # the budget's gauges, every process's count
                await asyncio.to_thread(store.renew_claims, pipeline.owner, CLAIM_LEASE_S)
                if time.monotonic() >= next_purge:
                    purged = await asyncio.to_thread(
                        store.purge_ledger, datetime.now(UTC) - retention
                    )
                    if purged:
                        log.info("ledger entries past retention purged", count=purged)
                    next_purge = time.monotonic() + 3_600
            except Exception as exc:
                log.warning("housekeeping failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(LEASE_RENEW_S)


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
        raise SystemExit(f"configuration error: {exc}") from None
