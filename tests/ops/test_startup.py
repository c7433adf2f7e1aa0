"""Start-up (issue 16, items 15-17): a dependency that may come back (Kafka, PostgreSQL) is
waited for, alive and not ready, with a log line per try; whatever fails after the pipeline
started stops everything that was started; ``/readyz`` pings the store at most once a second;
readiness comes back once Metrica accepts the token again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from metrica_bridge import service as service_module
from metrica_bridge.config import Settings
from metrica_bridge.kafka.admin import TopicError, ensure_topics
from metrica_bridge.kafka.broker import free_port
from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.metrica.quota import QuotaGovernor
from metrica_bridge.metrica.retry import RetryPolicy
from metrica_bridge.metrics import REGISTRY
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.service import Service
from metrica_bridge.steps.batch import Endpoint, Pending, encode
from metrica_bridge.steps.send import Sender
from metrica_bridge.store import open_store
from metrica_bridge.store.base import Store, StoreError
from tests.support.kafka import TopicFactory
from tests.support.stack import COUNTER, TOKEN


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
        "metrica_api_url": "http://127.0.0.1:1",
        "metrica_counter_id": COUNTER,
        "metrica_token": SecretStr(TOKEN),
        "store_url": f"sqlite:///{tmp_path / 'state.db'}",
        "metrics_host": "127.0.0.1",
        "shutdown_timeout_s": 5,
        **overrides,
    }
    return Settings(**values)


async def _until(predicate: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def _setup_error() -> float | None:
    return REGISTRY.get_sample_value("metrica_bridge_setup_error")


async def test_an_unreachable_broker_is_waited_for_alive_and_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "DEPENDENCY_RETRY_S", 0.05)
    tries: list[float] = []

    def unreachable(*_args: Any, **_kw: Any) -> dict[str, int]:
        tries.append(time.monotonic())
        raise TopicError("cannot list topics: Local: Broker transport failure")

    monkeypatch.setattr(service_module, "ensure_topics", unreachable)
    service = Service(_settings(tmp_path, create_topics=True))
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(service.run(stop, health_port=0))
        try:
            await _until(lambda: len(tries) >= 3, 10, "three tries")
            assert not task.done()
            assert service.alive() == (True, "ok")
            ready, reason = service.ready()
            assert not ready
            assert reason.startswith("waiting for Kafka: TopicError: cannot list topics"), reason
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)  # stops cleanly, no exception
    retries = [e for e in logs if e["event"] == "Kafka is unreachable at start-up; retrying"]
    assert len(retries) >= 3
    assert retries[0]["log_level"] == "error"
    assert retries[0]["error"].startswith("TopicError: cannot list topics")


async def test_an_unreachable_store_is_waited_for_then_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "DEPENDENCY_RETRY_S", 0.05)
    tries: list[str] = []

    def flaky_store(url: str) -> Store:
        tries.append(url)
        if len(tries) < 3:
            raise StoreError("cannot connect to PostgreSQL store postgresql://u:***@db/x")
        return open_store(url)

    asked: list[bool] = []

    async def counter_timezone(self: Service, client: MetricaClient, stop: Any) -> str | None:
        asked.append(True)
        await stop.wait()
        return None

    monkeypatch.setattr(service_module, "open_store", flaky_store)
    monkeypatch.setattr(Service, "_counter_timezone", counter_timezone)
    service = Service(_settings(tmp_path, create_topics=False))
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop, health_port=0))
    try:
        await _until(lambda: bool(asked), 10, "the store, then the counter lookup")
        assert len(tries) == 3
        assert service.waiting_for is None
        assert service.store is not None
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_the_store_reason_is_on_readyz_while_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "DEPENDENCY_RETRY_S", 0.05)

    def down(url: str) -> Store:
        raise StoreError("cannot connect to PostgreSQL store postgresql://u:***@db/x: PoolTimeout")

    monkeypatch.setattr(service_module, "open_store", down)
    service = Service(_settings(tmp_path))
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop, health_port=0))
    try:
        await _until(lambda: service.waiting_for is not None, 10, "the first try")
        ready, reason = service.ready()
        assert not ready
        assert reason.startswith("waiting for the store: StoreError: cannot connect"), reason
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


class _Runner:
    started: ClassVar[list[str]] = []
    stopped: ClassVar[list[str]] = []
    fail_on: ClassVar[int] = 2

    def __init__(self, topic: str, *_args: Any) -> None:
        self.topic = topic
        self.assigned: set[int] = set()

    async def start(self) -> None:
        _Runner.started.append(self.topic)
        if len(_Runner.started) == _Runner.fail_on:
            raise RuntimeError("consumer failed to start")

    async def stop(self) -> None:
        _Runner.stopped.append(self.topic)

    def healthy(self) -> bool:
        return True


async def test_a_failure_after_the_pipeline_started_stops_everything_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not consumer threads and the producer left running while the store is closed."""
    _Runner.started, _Runner.stopped = [], []
    closed: list[str] = []

    async def zone(self: Service, client: MetricaClient, stop: Any) -> str:
        return "Europe/Moscow"

    async def agrees(self: Service, *_args: Any) -> bool:
        return True

    real_producer = service_module.Producer.from_settings

    def producer(settings: Settings) -> Any:
        made = real_producer(settings)
        close = made.close

        def recording_close(timeout_s: float = 30.0) -> None:
            closed.append("producer")
            close(timeout_s)

        made.close = recording_close  # type: ignore[method-assign]
        return made

    real_close = service_module.Pipeline.close

    async def pipeline_close(self: Any) -> None:
        closed.append("pipeline")
        await real_close(self)

    def store(url: str) -> Store:
        made = open_store(url)
        close = made.close

        def recording_close() -> None:
            closed.append("store")
            close()

        made.close = recording_close  # type: ignore[method-assign]
        return made

    monkeypatch.setattr(service_module, "open_store", store)
    monkeypatch.setattr(Service, "_counter_timezone", zone)
    monkeypatch.setattr(Service, "_status_map_agrees", agrees)
    monkeypatch.setattr(service_module, "TopicRunner", _Runner)
    monkeypatch.setattr(service_module, "require_topics", lambda *_a, **_k: {})  # no broker here
    monkeypatch.setattr(service_module.Producer, "from_settings", producer)
    monkeypatch.setattr(service_module.Pipeline, "close", pipeline_close)
    service = Service(_settings(tmp_path, create_topics=False))
    with pytest.raises(RuntimeError, match="consumer failed to start"):
        await asyncio.wait_for(service.run(asyncio.Event(), health_port=0), 30)
    assert _Runner.stopped == _Runner.started[:1]  # the consumer that had started
    assert closed == ["pipeline", "producer", "store"]


class _CountingStore:
    def __init__(self) -> None:
        self.pings = 0

    def ping(self) -> bool:
        self.pings += 1
        return True


def test_readyz_pings_the_store_at_most_once_a_second(tmp_path: Path) -> None:
    service = Service(_settings(tmp_path))
    store = _CountingStore()
    service.store = cast(Store, store)
    service.started.set()
    for _ in range(20):
        assert service.ready() == (True, "ok")
    assert store.pings == 1
    time.sleep(service_module.STORE_PING_CACHE_S + 0.05)
    assert service.ready() == (True, "ok")
    assert store.pings == 2


async def test_readiness_comes_back_once_the_token_is_accepted_again(tmp_path: Path) -> None:
    """The state is the service's (``setup_error``); the gauge mirrors it, both ways."""
    service = Service(_settings(tmp_path))
    store = open_store(f"sqlite:///{tmp_path / 'sender.db'}")
    service.store = store
    service.started.set()
    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], port=0) as sandbox:
        sandbox.set_faults(reject_token=TOKEN)
        async with MetricaClient(
            api_url=sandbox.url,
            counter_id=COUNTER,
            token=SecretStr(TOKEN),
            governor=QuotaGovernor(requests_per_second=1_000, daily_budget=1_000_000),
            retry=RetryPolicy(max_attempts=2, budget_s=5, base_s=0.01, cap_s=0.05),
        ) as client:
            sender = Sender(
                client, store, "owner", setup_retry_s=0.05, on_setup_error=service._on_setup_error
            )
            record = {"uniq_id": "c1", "client_ids": ["1712345678901234567"]}
            batch = [Pending("c1", record, encode(record), time.monotonic(), [], ["e1"])]
            task = asyncio.create_task(sender(Endpoint.CONTACTS, batch))
            await _until(lambda: service.setup_error is not None, 10, "the setup error")
            assert not service.ready()[0]
            assert service.ready()[1].startswith("setup error: ")
            assert _setup_error() == 1
            sandbox.set_faults(reject_token=None)  # the token is fixed
            await asyncio.wait_for(task, 30)
    assert service.setup_error is None
    assert _setup_error() == 0
    assert service.ready() == (True, "ok")
    store.close()


async def test_missing_dead_letter_topics_are_waited_for_not_found_at_the_first_poison(
    bootstrap: str, topics: TopicFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16, item 5: with CREATE_TOPICS=false a missing <topic>.dlq is a start-up wait
    (alive, not ready, saying which), not a partition held at its first poison record."""
    monkeypatch.setattr(service_module, "DEPENDENCY_RETRY_S", 0.05)
    monkeypatch.setattr(service_module, "DEPENDENCY_RETRY_MAX_S", 0.2)

    async def zone(self: Service, client: MetricaClient, stop: Any) -> str:
        return "Europe/Moscow"

    async def agrees(self: Service, *_args: Any) -> bool:
        return True

    monkeypatch.setattr(Service, "_counter_timezone", zone)
    monkeypatch.setattr(Service, "_status_map_agrees", agrees)
    settings = topics.crm_settings(
        1,
        dlq=False,
        metrica_api_url="http://127.0.0.1:1",
        metrica_counter_id=COUNTER,
        metrica_token=SecretStr(TOKEN),
        store_url=f"sqlite:///{tmp_path / 'state.db'}",
        metrics_host="127.0.0.1",
        shutdown_timeout_s=5,
    )
    dlq = f"{settings.topic_deal_status_changed}.dlq"
    service = Service(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop, health_port=0))
    try:
        await _until(lambda: "dead-letter" in service.ready()[1], 20, "the wait for the DLQs")
        assert dlq in service.ready()[1]
        assert not service.started.is_set()
        names = [settings.topic_lead_created, settings.topic_deal_status_changed]
        names.append(settings.topic_payment_received)
        ensure_topics(bootstrap, {f"{name}.dlq": 1 for name in names})
        topics.created.extend(f"{name}.dlq" for name in names)
        await _until(service.started.is_set, 30, "the consumers to start")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
