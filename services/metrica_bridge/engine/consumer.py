"""A thin wrapper over ``confluent_kafka.Consumer``, owned by one thread.

librdkafka serves rebalance callbacks inside ``consume()``, on the calling thread, and a consumer
is simplest to reason about when one thread makes every call on it. So this thread polls, and the
asyncio engine talks to it through commands (commit, pause, resume); batches of records travel
the other way with ``call_soon_threadsafe``, in order. On revocation the thread blocks in the
callback until the engine has finished or abandoned the revoked partitions' work, then commits
the offsets the engine names (engine/commits.py decides which) itself, before librdkafka hands
the partitions to another member: blocked in the callback, it could not serve a commit command.

Backpressure is exact: the thread hands over one batch at a time and waits until the engine
has taken it in; before each poll it asks ``admit()`` and pauses (or resumes) the assignment
accordingly, so no more than one batch beyond the engine's limit is ever in memory. It keeps
polling while paused: that serves rebalances and keeps the group membership alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from metrica_bridge.engine.offsets import TopicPartition as TP
from metrica_bridge.kafka.record import SourceRecord
from metrica_bridge.logs import get_logger, kafka_logger
from metrica_bridge.metrics import CONSUMER_LAG

log = get_logger("metrica_bridge.engine.consumer")

CONSUMER_DEFAULTS: dict[str, str] = {
    "enable.auto.commit": "false",
    "enable.auto.offset.store": "false",
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "cooperative-sticky",
    "statistics.interval.ms": "5000",
    # librdkafka prefetches up to 64 MiB per consumer by default, and a fetch may bring 50 MiB;
    # the engine, not the fetch, is the bottleneck, so smaller buffers only save memory (50 MiB
    # of RSS for three consumers on a backlog; override: KAFKA_QUEUED_MAX_MESSAGES_KBYTES,
    # KAFKA_FETCH_MAX_BYTES).
    "queued.max.messages.kbytes": "4096",
    "fetch.max.bytes": "4194304",
    # Fetch every partition in small slices (librdkafka's default is 1 MiB, ~7,000 events, per
    # partition; a broker still returns a whole first batch), so a consumer at its in-flight
    # limit has read its partitions about evenly: event-time alignment (engine/align.py) waits
    # for the slowest partition of each topic.
    "max.partition.fetch.bytes": "131072",
    # The end of a partition is news to the engine: a lead partition at its end holds no deal
    # event back (engine/align.py).
    "enable.partition.eof": "true",
}

RevokeFn = Callable[[list[TP]], Awaitable[Mapping[TP, int]]]
"""Drains the revoked partitions' work and returns the offsets to commit before they go."""
AssignFn = Callable[[list[TP]], Awaitable[None]]
RecordsFn = Callable[[list[SourceRecord], list[TP]], None]
"""Records in partition order, and the partitions whose end they reached (nothing after)."""


RebalanceCallback = Callable[[Any, list[TopicPartition]], None]


class KafkaConsumer(Protocol):
    """What this thread calls on ``confluent_kafka.Consumer`` (a seam for tests)."""

    def subscribe(
        self,
        topics: list[str],
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None: ...
    def consume(
        self, num_messages: int = 1, timeout: float = -1
    ) -> list[confluent_kafka.Message]: ...
    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: Literal[False]
    ) -> list[TopicPartition]: ...
    def pause(self, partitions: list[TopicPartition]) -> None: ...
    def resume(self, partitions: list[TopicPartition]) -> None: ...
    def close(self) -> None: ...


ConsumerFactory = Callable[[dict[str, Any]], KafkaConsumer]


@dataclass(slots=True)
class _Command:
    name: str
    arg: Any
    done: Future[Any]


class ConsumerThread:
    def __init__(
        self,
        config: Mapping[str, str],
        topics: Sequence[str],
        loop: asyncio.AbstractEventLoop,
        *,
        on_records: RecordsFn,
        on_assign: AssignFn,
        on_revoke: RevokeFn,
        admit: Callable[[], bool] = lambda: True,
        batch_size: int = 1_000,
        poll_timeout_s: float = 0.1,
        revoke_timeout_s: float = 60.0,
        consumer_factory: ConsumerFactory = confluent_kafka.Consumer,
    ) -> None:
        props = {**CONSUMER_DEFAULTS, **config}
        self._stats_enabled = props.get("statistics.interval.ms", "0") != "0"
        conf: dict[str, Any] = dict(props)
        if self._stats_enabled:
            conf["stats_cb"] = self._on_stats
        conf["error_cb"] = self._on_error
        conf["logger"] = kafka_logger()
        self._consumer = consumer_factory(conf)
        self._topics = list(topics)
        self._loop = loop
        self._on_records = on_records
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._admit = admit
        self._taken = threading.Event()
        self._batch_size = batch_size
        self._poll_timeout_s = poll_timeout_s
        self._revoke_timeout_s = revoke_timeout_s
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._paused = False
        self._assignment: set[TP] = set()
        self.fatal: str | None = None
        self._closed: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="kafka-consumer", daemon=True)

    # -- called from the engine -------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def assignment(self) -> set[TP]:
        return set(self._assignment)

    async def commit(self, offsets: Mapping[TP, int]) -> None:
        await self._call("commit", dict(offsets))

    async def stop(self) -> None:
        """Leave the group (revoking, so the engine drains and commits) and close."""
        self._stop.set()
        if self._thread.is_alive():
            await asyncio.wrap_future(self._closed)

    def alive(self) -> bool:
        return self._thread.is_alive()

    async def _call(self, name: str, arg: Any) -> Any:
        if not self._thread.is_alive():
            raise RuntimeError("the consumer thread is not running")
        done: Future[Any] = Future()
        self._commands.put(_Command(name, arg, done))
        return await asyncio.wrap_future(done)

    # -- the consumer thread ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._consumer.subscribe(
                self._topics,
                on_assign=self._assigned,
                on_revoke=self._revoked,
                on_lost=self._revoked,
            )
            while not self._stop.is_set():
                self._serve_commands()
                paused = not self._admit()
                if paused != self._paused:
                    self._paused = paused
                    self._apply_pause(list(self._assignment))
                messages = self._consumer.consume(self._batch_size, self._poll_timeout_s)
                records: list[SourceRecord] = []
                at_end: dict[TP, None] = {}
                for message in messages:
                    record = self._record(message)
                    if record is not None:
                        at_end.pop((record.topic, record.partition), None)
                        records.append(record)
                    elif _at_end(message):
                        at_end[(message.topic() or "", message.partition() or 0)] = None
                if records or at_end:
                    self._taken.clear()
                    self._loop.call_soon_threadsafe(self._hand_over, records, list(at_end))
                    while not self._taken.wait(0.1) and not self._stop.is_set():
                        pass
        except Exception as exc:  # surfaced to the engine through `fatal`
            self.fatal = f"{type(exc).__name__}: {exc}"
            log.error("consumer thread failed", error=self.fatal)
        finally:
            try:
                self._consumer.close()  # revokes the assignment: drain and commit run here
            except Exception as exc:
                log.warning("consumer close failed", error=f"{type(exc).__name__}: {exc}")
            self._serve_commands(closing=True)
            self._closed.set_result(None)

    def _hand_over(self, records: list[SourceRecord], at_end: list[TP]) -> None:
        try:
            self._on_records(records, at_end)
        finally:
            self._taken.set()

    def _serve_commands(self, closing: bool = False) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if closing:
                command.done.set_exception(RuntimeError("the consumer is closed"))
                continue
            try:
                command.done.set_result(self._execute(command))
            except Exception as exc:
                command.done.set_exception(exc)

    def _execute(self, command: _Command) -> Any:
        if command.name == "commit":
            self._commit(command.arg)
        return None

    def _commit(self, offsets: Mapping[TP, int]) -> None:
        owned = [
            TopicPartition(t, p, o) for (t, p), o in offsets.items() if (t, p) in self._assignment
        ]
        if not owned:
            return
        try:
            self._consumer.commit(offsets=owned, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError._NO_OFFSET:
                return
            raise

    def _apply_pause(self, tps: list[TP]) -> None:
        if not tps:
            return
        partitions = [TopicPartition(t, p) for t, p in tps]
        if self._paused:
            self._consumer.pause(partitions)
        else:
            self._consumer.resume(partitions)

    def _record(self, message: confluent_kafka.Message) -> SourceRecord | None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error", error=error.str(), code=error.name())
            return None
        kind, ts = message.timestamp()
        raw = message.headers() or []
        headers = list(raw.items()) if isinstance(raw, dict) else raw
        key, value = message.key(), message.value()
        return SourceRecord(
            topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            key=key.encode() if isinstance(key, str) else key,
            value=value.encode() if isinstance(value, str) else value,
            headers=tuple((k, _bytes(v)) for k, v in headers),
            timestamp_ms=ts if kind != confluent_kafka.TIMESTAMP_NOT_AVAILABLE else None,
        )

    def _assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._assignment.update(tps)
        if self._paused:
            self._apply_pause(tps)
        self._wait(self._on_assign(tps))
        log.info("partitions assigned", partitions=_fmt(tps))

    def _revoked(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        try:
            offsets = self._wait(self._on_revoke(tps))
            self._commit(offsets)
        except Exception as exc:
            log.warning("commit on revocation failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._assignment.difference_update(tps)
            for topic, partition in tps:
                _forget_lag(topic, partition)
        log.info("partitions revoked", partitions=_fmt(tps))

    def _wait(self, coro: Awaitable[Any]) -> Any:
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(coro), self._loop)
        return future.result(timeout=self._revoke_timeout_s)

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self.fatal = f"{error.name()}: {error.str()}"
        log.warning("kafka error", error=error.str(), code=error.name())

    def _on_stats(self, raw: str) -> None:
        try:
            stats = json.loads(raw)
        except ValueError:
            return
        for topic, tstats in (stats.get("topics") or {}).items():
            for pid, pstats in (tstats.get("partitions") or {}).items():
                partition = int(pid)
                lag = pstats.get("consumer_lag", -1)
                # librdkafka reports the internal partition -1 and lag -1 when unknown.
                if (
                    partition < 0
                    or lag is None
                    or lag < 0
                    or (topic, partition) not in self._assignment
                ):
                    continue
                CONSUMER_LAG.labels(topic=topic, partition=str(partition)).set(lag)


def _at_end(message: confluent_kafka.Message) -> bool:
    error = message.error()
    return error is not None and error.code() == KafkaError._PARTITION_EOF


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value.encode() if isinstance(value, str) else value


def _forget_lag(topic: str, partition: int) -> None:
    # A partition handed to another member must not keep reporting its last lag from here.
    with contextlib.suppress(KeyError):
        CONSUMER_LAG.remove(topic, str(partition))


def _fmt(tps: list[TP]) -> str:
    return ",".join(f"{t}[{p}]" for t, p in sorted(tps))
