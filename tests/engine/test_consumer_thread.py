"""The consumer thread driven by a fake ``confluent_kafka.Consumer``: no broker.

The fake serves rebalance callbacks inside ``consume()``, on the consumer thread, as librdkafka
does, and revokes its whole assignment on ``close()``.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from structlog.testing import capture_logs

from metrica_bridge.engine.consumer import CONSUMER_DEFAULTS, ConsumerThread
from metrica_bridge.engine.offsets import TopicPartition as TP
from metrica_bridge.kafka.record import SourceRecord
from metrica_bridge.metrics import CONSUMER_LAG, REGISTRY

Step = Callable[["FakeConsumer"], list["FakeMessage"]]


class FakeMessage:
    def __init__(
        self, topic: str, partition: int, offset: int, *, error: KafkaError | None = None
    ) -> None:
        self._topic, self._partition, self._offset, self._error = topic, partition, offset, error

    def error(self) -> KafkaError | None:
        return self._error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return confluent_kafka.TIMESTAMP_CREATE_TIME, 1_700_000_000_000 + self._offset

    def headers(self) -> list[tuple[str, str | bytes]]:
        return [("kind", "deal"), ("raw", b"\x00")]

    def key(self) -> str:
        return f"k{self._offset}"  # a str key: the thread hands over bytes

    def value(self) -> bytes:
        return b"v%d" % self._offset


def record(topic: str, partition: int, offset: int) -> FakeMessage:
    return FakeMessage(topic, partition, offset)


def end_of(topic: str, partition: int) -> FakeMessage:
    return FakeMessage(topic, partition, -1, error=KafkaError(KafkaError._PARTITION_EOF))


class FakeConsumer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.steps: queue.SimpleQueue[Step | list[FakeMessage]] = queue.SimpleQueue()
        self.callbacks: dict[str, Any] = {}
        self.assigned: list[TP] = []
        self.commits: list[list[tuple[str, int, int]]] = []
        self.commit_threads: list[str] = []
        self.commit_error: Exception | None = None
        self.paused: list[list[TP]] = []
        self.resumed: list[list[TP]] = []
        self.consume_calls = 0
        self.closed = False

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.topics = topics
        self.callbacks = callbacks

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        self.consume_calls += 1
        try:
            step = self.steps.get_nowait()
        except queue.Empty:
            time.sleep(timeout)
            return []
        return step if isinstance(step, list) else step(self)

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        assert asynchronous is False
        if self.commit_error is not None:
            error, self.commit_error = self.commit_error, None
            raise error
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])
        self.commit_threads.append(threading.current_thread().name)
        return offsets

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.append([(tp.topic, tp.partition) for tp in partitions])

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resumed.append([(tp.topic, tp.partition) for tp in partitions])

    def close(self) -> None:
        self.closed = True
        if self.assigned:
            self._rebalance("on_revoke", list(self.assigned))

    # -- scripted rebalances, served inside consume() --------------------------------------------
    def assign(self, tps: list[TP]) -> None:
        def step(consumer: FakeConsumer) -> list[FakeMessage]:
            consumer.assigned += tps
            consumer._rebalance("on_assign", tps)
            return []

        self.steps.put(step)

    def revoke(self, tps: list[TP]) -> None:
        def step(consumer: FakeConsumer) -> list[FakeMessage]:
            consumer._rebalance("on_revoke", tps)
            consumer.assigned = [tp for tp in consumer.assigned if tp not in tps]
            return []

        self.steps.put(step)

    def _rebalance(self, name: str, tps: list[TP]) -> None:
        self.callbacks[name](self, [TopicPartition(t, p) for t, p in tps])


class Engine:
    """The asyncio side: what the runner would do, recorded."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[SourceRecord], list[TP]]] = []
        self.assigned: list[list[TP]] = []
        self.revoked: list[list[TP]] = []
        self.to_commit: dict[TP, int] = {}
        self.revoke_error: Exception | None = None
        self.admit = True
        self.on_batch: Callable[[], None] = lambda: None

    def on_records(self, records: list[SourceRecord], at_end: list[TP]) -> None:
        self.on_batch()
        self.batches.append((records, at_end))

    async def on_assign(self, tps: list[TP]) -> None:
        self.assigned.append(tps)

    async def on_revoke(self, tps: list[TP]) -> Mapping[TP, int]:
        self.revoked.append(tps)
        if self.revoke_error is not None:
            raise self.revoke_error
        return {tp: o for tp, o in self.to_commit.items() if tp in tps}


Started = tuple[ConsumerThread, FakeConsumer, Engine]


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Awaitable[Started]]]:
    threads: list[ConsumerThread] = []

    async def start(config: Mapping[str, str] | None = None) -> Started:
        made: list[FakeConsumer] = []

        def factory(conf: dict[str, Any]) -> FakeConsumer:
            made.append(FakeConsumer(conf))
            return made[0]

        engine = Engine()
        thread = ConsumerThread(
            config or {"group.id": "g"},
            ["t"],
            asyncio.get_running_loop(),
            on_records=engine.on_records,
            on_assign=engine.on_assign,
            on_revoke=engine.on_revoke,
            admit=lambda: engine.admit,
            poll_timeout_s=0.01,
            revoke_timeout_s=5,
            consumer_factory=factory,
        )
        thread.start()
        threads.append(thread)
        return thread, made[0], engine

    yield start
    for thread in threads:
        await asyncio.wait_for(thread.stop(), 10)


async def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s")
        await asyncio.sleep(0.01)


async def test_settings_reach_the_consumer_with_the_defaults_under_them(
    started: Callable[..., Awaitable[Started]],
) -> None:
    thread, fake, _ = await started({"group.id": "g", "fetch.max.bytes": "1024"})
    await until(lambda: bool(fake.callbacks))
    assert fake.topics == ["t"]
    assert set(fake.callbacks) == {"on_assign", "on_revoke", "on_lost"}
    assert fake.config["fetch.max.bytes"] == "1024"
    assert fake.config["enable.auto.commit"] == CONSUMER_DEFAULTS["enable.auto.commit"]
    assert callable(fake.config["stats_cb"])
    fake.config["error_cb"](KafkaError(KafkaError._FATAL, "fenced", fatal=True))
    assert thread.fatal == "_FATAL: fenced"


async def test_batches_arrive_in_order_with_the_partitions_at_their_end(
    started: Callable[..., Awaitable[Started]],
) -> None:
    _, fake, engine = await started()
    fake.assign([("t", 0), ("t", 1)])
    fake.steps.put([record("t", 0, 0), record("t", 0, 1), end_of("t", 1), end_of("t", 0)])
    fake.steps.put([end_of("t", 0), record("t", 0, 2)])  # a record after the end: not at it
    await until(lambda: len(engine.batches) == 2)
    assert engine.assigned == [[("t", 0), ("t", 1)]]
    (first, first_end), (second, second_end) = engine.batches
    assert [r.offset for r in first] == [0, 1]
    assert first_end == [("t", 1), ("t", 0)]
    assert [r.offset for r in second] == [2]
    assert second_end == []
    assert first[1] == SourceRecord(
        topic="t",
        partition=0,
        offset=1,
        key=b"k1",
        value=b"v1",
        headers=(("kind", b"deal"), ("raw", b"\x00")),
        timestamp_ms=1_700_000_000_001,
    )


async def test_the_next_poll_waits_until_the_engine_took_the_batch(
    started: Callable[..., Awaitable[Started]],
) -> None:
    _, fake, engine = await started()
    polls_while_handing_over: list[int] = []

    def slow_engine() -> None:
        before = fake.consume_calls
        time.sleep(0.2)  # blocks the loop, as a slow engine would
        polls_while_handing_over.append(fake.consume_calls - before)

    engine.on_batch = slow_engine
    fake.steps.put([record("t", 0, 0)])
    await until(lambda: len(engine.batches) == 1)
    assert polls_while_handing_over == [0]


async def test_commit_runs_on_the_consumer_thread_for_owned_partitions_only(
    started: Callable[..., Awaitable[Started]],
) -> None:
    thread, fake, engine = await started()
    fake.assign([("t", 0)])
    await until(lambda: bool(engine.assigned))
    assert thread.assignment() == {("t", 0)}
    await thread.commit({("t", 0): 5, ("t", 9): 3})
    assert fake.commits == [[("t", 0, 5)]]
    assert fake.commit_threads == ["kafka-consumer"]
    await thread.commit({("t", 9): 1})  # not ours (any more): nothing sent
    assert len(fake.commits) == 1


async def test_no_offset_to_commit_is_fine_other_commit_errors_reach_the_caller(
    started: Callable[..., Awaitable[Started]],
) -> None:
    thread, fake, engine = await started()
    fake.assign([("t", 0)])
    await until(lambda: bool(engine.assigned))
    fake.commit_error = KafkaException(KafkaError(KafkaError._NO_OFFSET))
    await thread.commit({("t", 0): 1})
    fake.commit_error = KafkaException(KafkaError(KafkaError._TRANSPORT))
    with pytest.raises(KafkaException):
        await thread.commit({("t", 0): 1})
    assert fake.commits == []


async def test_revocation_commits_what_the_engine_names_before_the_partitions_go(
    started: Callable[..., Awaitable[Started]],
) -> None:
    thread, fake, engine = await started()
    engine.to_commit = {("t", 0): 7, ("t", 1): 3}
    CONSUMER_LAG.labels(topic="t", partition="0").set(12)
    fake.assign([("t", 0), ("t", 1)])
    fake.revoke([("t", 0)])
    await until(lambda: bool(engine.revoked))
    await until(lambda: thread.assignment() == {("t", 1)})
    # Committed while still owned (the thread commits only owned partitions), on its thread.
    assert fake.commits == [[("t", 0, 7)]]
    assert fake.commit_threads == ["kafka-consumer"]
    sample = "metrica_bridge_consumer_lag"
    assert REGISTRY.get_sample_value(sample, {"topic": "t", "partition": "0"}) is None


async def test_a_failed_revocation_still_lets_the_partitions_go(
    started: Callable[..., Awaitable[Started]],
) -> None:
    thread, fake, engine = await started()
    engine.revoke_error = RuntimeError("drain failed")
    fake.assign([("t", 0)])
    with capture_logs() as logs:
        fake.revoke([("t", 0)])
        await until(lambda: thread.assignment() == set() and bool(engine.revoked))
        await until(lambda: any(e["event"] == "partitions revoked" for e in logs))
    assert fake.commits == []
    failed = [e for e in logs if e["event"] == "commit on revocation failed"]
    assert failed[0]["error"] == "RuntimeError: drain failed"


async def test_stop_closes_the_consumer_and_commits_the_revoked_assignment(
    started: Callable[..., Awaitable[Started]],
) -> None:
    thread, fake, engine = await started()
    engine.to_commit = {("t", 0): 3}
    fake.assign([("t", 0)])
    await until(lambda: bool(engine.assigned))
    await asyncio.wait_for(thread.stop(), 5)
    assert fake.closed
    assert engine.revoked == [[("t", 0)]]
    assert fake.commits == [[("t", 0, 3)]]
    await until(lambda: not thread.alive())  # stop() returns just before the thread ends
    with pytest.raises(RuntimeError, match="not running"):
        await thread.commit({("t", 0): 4})


async def test_admit_pauses_and_resumes_the_whole_assignment(
    started: Callable[..., Awaitable[Started]],
) -> None:
    _, fake, engine = await started()
    fake.assign([("t", 0)])
    await until(lambda: bool(engine.assigned))
    engine.admit = False
    await until(lambda: fake.paused == [[("t", 0)]])
    fake.assign([("t", 1)])  # assigned while paused: paused at once
    await until(lambda: len(fake.paused) == 2)
    assert fake.paused[1] == [("t", 1)]
    engine.admit = True
    await until(lambda: bool(fake.resumed))
    assert sorted(fake.resumed[0]) == [("t", 0), ("t", 1)]


async def test_a_failing_poll_is_fatal_and_still_closes(
    started: Callable[..., Awaitable[Started]],
) -> None:
    thread, fake, _ = await started()

    def broken(consumer: FakeConsumer) -> list[FakeMessage]:
        raise RuntimeError("boom")

    fake.steps.put(broken)
    await until(lambda: not thread.alive())
    assert thread.fatal == "RuntimeError: boom"
    assert fake.closed


async def test_lag_is_reported_for_assigned_partitions_only(
    started: Callable[..., Awaitable[Started]],
) -> None:
    _, fake, engine = await started()
    fake.assign([("lagged", 0)])
    await until(lambda: bool(engine.assigned))
    partitions = {"0": {"consumer_lag": 40}, "1": {"consumer_lag": 9}, "-1": {"consumer_lag": 1}}
    fake.config["stats_cb"](json.dumps({"topics": {"lagged": {"partitions": partitions}}}))
    sample = "metrica_bridge_consumer_lag"
    assert REGISTRY.get_sample_value(sample, {"topic": "lagged", "partition": "0"}) == 40
    assert REGISTRY.get_sample_value(sample, {"topic": "lagged", "partition": "1"}) is None
