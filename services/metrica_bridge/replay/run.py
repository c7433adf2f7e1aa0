"""The replay loop: read the DLQ with the replay's own group, re-publish what matches, commit.

Order of work per batch: decide every record → produce the ones to replay → wait until the
broker acknowledged all of them (``Producer.flush``) → commit the batch's offsets. Offsets are
never committed ahead of the acknowledgements, so a crash or a failed delivery re-replays the
batch next time (the service dedupes by ``event_id``) instead of losing records.

Where the DLQ ends. tansu answers ListOffsets wrongly (the last batch's first offset + 1,
``/work/shared/tansu-notes.md``) but its Fetch responses carry the right high watermark, and so
do librdkafka's cached watermarks and its end-of-partition events. So, per partition:

* the end "as it is at start" is the cached high watermark right after the first fetch that
  returned a record (records added later are left for the next run: a record this run
  replays and that fails again lands behind that end, so a run never chases its own tail);
* ``enable.partition.eof`` marks a partition caught up when the fetcher reaches its end (and
  gives the end of a partition that has nothing new at all);
* as a fallback for brokers that never send EOF, ``idle_timeout_s`` without any record or
  event after assignment counts as caught up.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import confluent_kafka
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from metrica_bridge.config import Settings
from metrica_bridge.kafka.admin import TopicError, list_topics
from metrica_bridge.kafka.producer import Producer, ProducerError
from metrica_bridge.kafka.settings import admin_config, for_consumer, layered
from metrica_bridge.logs import get_logger, kafka_logger
from metrica_bridge.replay.options import ReplayOptions, replay_group_id
from metrica_bridge.replay.records import DlqRecord, Verdict, judge
from metrica_bridge.replay.summary import ClassCounts, Refusal, ReplaySummary

log = get_logger("metrica_bridge.replay")

# Our defaults, under the operator's KAFKA_* properties: a short-lived batch job wants a quick
# group join and a short fetch wait (a waiting fetch is not woken by new data on tansu).
CONSUMER_DEFAULTS: dict[str, str] = {
    "session.timeout.ms": "10000",
    "heartbeat.interval.ms": "1000",
    "fetch.wait.max.ms": "100",
}
# Over the operator's properties: what the replay's correctness depends on. The group is the
# replay's own, so the eager "range" strategy (which lets us set start offsets in on_assign)
# cannot clash with the service's cooperative groups.
CONSUMER_FORCED: dict[str, str] = {
    "enable.auto.commit": "false",
    "enable.auto.offset.store": "false",
    "auto.offset.reset": "earliest",
    "enable.partition.eof": "true",
    "partition.assignment.strategy": "range",
    "statistics.interval.ms": "0",
}
MAX_BATCH = 500
POLL_S = 0.1
FLUSH_TIMEOUT_S = 60.0

ProgressFn = Callable[[ReplaySummary], None]


class ReplayError(RuntimeError):
    """A run that could not finish; ``summary`` holds what was done (and committed) before."""

    exit_code = 1

    def __init__(self, message: str, summary: ReplaySummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary


class UnknownTopic(ReplayError):
    """The DLQ topic, or a record's original topic, does not exist (never auto-created)."""

    exit_code = 2


class BrokerUnavailable(ReplayError):
    """The cluster did not answer (metadata, group join, committed offsets)."""


class DeliveryFailed(ReplayError):
    """The broker did not acknowledge re-published records, or the commit failed."""


class ReplayBusy(ReplayError):
    """The group gave this run no partition: another replay of the same DLQ is running."""


@dataclass(slots=True)
class _Partition:
    start: int | None = None  # first offset this run saw
    end: int | None = None  # the end as it was at start (exclusive)
    done: bool = False


class _Pacer:
    """A token bucket of burst 1: at most ``rate`` records in any second."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = time.monotonic()

    def wait(self, stop: threading.Event) -> bool:
        """Block until the next record may go; False if ``stop`` was set meanwhile."""
        delay = self._next - time.monotonic()
        if delay > 0 and stop.wait(delay):
            return False
        self._next = max(self._next, time.monotonic()) + self._interval
        return True


def replay(
    settings: Settings,
    options: ReplayOptions,
    *,
    on_progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
) -> ReplaySummary:
    """Run one replay (see the module docstring); raises :class:`ReplayError` subclasses.

    ``stop`` ends the run early but cleanly: the records handled so far are acknowledged and
    committed, and the summary says ``interrupted``.
    """
    run = _Run(settings, options, on_progress, stop or threading.Event())
    try:
        run.execute()
    except ReplayError as exc:
        exc.summary = run.summary
        raise
    finally:
        run.summary.elapsed_s = time.monotonic() - run.started
        run.close()
    log.debug(  # the CLI prints the summary table; this line is for API callers' logs
        "replay finished",
        dlq=options.dlq_topic,
        dry_run=options.dry_run,
        replayed=run.summary.replayed,
        skipped=run.summary.skipped,
        refused=run.summary.refused,
        interrupted=run.summary.interrupted,
    )
    return run.summary


class _Run:
    def __init__(
        self,
        settings: Settings,
        options: ReplayOptions,
        on_progress: ProgressFn | None,
        stop: threading.Event,
    ) -> None:
        self.started = time.monotonic()
        self.settings = settings
        self.options = options
        self.dlq = options.dlq_topic
        self.stop = stop
        self.on_progress = on_progress
        group = replay_group_id(settings, self.dlq)
        self.summary = ReplaySummary(self.dlq, group, options.dry_run)
        self.consumer: confluent_kafka.Consumer | None = None
        self.producer: Producer | None = None
        self.topics: dict[str, int] = {}
        self.parts: dict[int, _Partition] = {}
        self.assigned: set[int] = set()
        self.assignment_seen = False
        self.busy = False  # the first assignment was empty
        self.rebalancing = False
        self.reset_done: set[int] = set()
        self.last_activity = time.monotonic()
        self.last_error: str | None = None
        self.pacer = _Pacer(options.rate) if options.rate > 0 and not options.dry_run else None
        # About one second of work per batch when paced, so heartbeats and progress stay fresh.
        self.batch_size = (
            max(1, min(MAX_BATCH, int(options.rate))) if self.pacer is not None else MAX_BATCH
        )
        self.group = group

    # -- setup ---------------------------------------------------------------------------------
    def _list_topics(self) -> dict[str, int]:
        try:
            return list_topics(
                admin_config(self.settings), timeout_s=self.options.request_timeout_s
            )
        except TopicError as exc:
            raise BrokerUnavailable(f"the Kafka cluster is unreachable: {exc}") from None

    def _consumer_config(self) -> dict[str, Any]:
        props = layered(
            CONSUMER_DEFAULTS,
            for_consumer(self.settings.kafka_common()),
            CONSUMER_FORCED,
            {"group.id": self.group, "client.id": "metrica-bridge-replay"},
        )
        return {**props, "error_cb": self._on_error, "logger": kafka_logger()}

    def _on_error(self, error: KafkaError) -> None:
        self.last_error = f"{error.name()}: {error.str()}"

    def execute(self) -> None:
        self.topics = self._list_topics()
        if self.dlq not in self.topics:
            raise UnknownTopic(f"DLQ topic {self.dlq!r} does not exist")
        self.consumer = confluent_kafka.Consumer(self._consumer_config())
        if not self.options.dry_run:
            self.producer = Producer.from_settings(
                self.settings, futures=False, client_id="metrica-bridge-replay"
            )
        if self.options.dry_run:
            self._assign_directly(self.consumer)
        else:
            # Joining the group makes a second concurrent replay of this DLQ get no partition
            # (it stops, reporting ReplayBusy) instead of replaying the same records.
            self.consumer.subscribe(
                [self.dlq],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
        self._loop(self.consumer)

    def _assign_directly(self, consumer: confluent_kafka.Consumer) -> None:
        """A dry run reads from the group's committed position without joining the group (so it
        never disturbs a real run) and never commits."""
        wanted = [TopicPartition(self.dlq, p) for p in range(self.topics[self.dlq])]
        try:
            committed = consumer.committed(wanted, timeout=self.options.request_timeout_s)
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot read committed offsets: {exc.args[0]}") from None
        for tp in committed:
            if self.options.from_beginning or tp.offset < 0:
                tp.offset = OFFSET_BEGINNING
        consumer.assign(committed)
        self._assigned([tp.partition for tp in committed])

    def _on_assign(
        self, consumer: confluent_kafka.Consumer, partitions: list[TopicPartition]
    ) -> None:
        if self.options.from_beginning:
            for tp in partitions:
                if tp.partition not in self.reset_done:
                    tp.offset = OFFSET_BEGINNING
                    self.reset_done.add(tp.partition)
            consumer.assign(partitions)
        self._assigned([tp.partition for tp in partitions])
        # A partition finished earlier in this run stays finished after a rebalance.
        done = [TopicPartition(self.dlq, p) for p in self.assigned if self.parts[p].done]
        if done:
            consumer.pause(done)

    def _on_revoke(
        self, _consumer: confluent_kafka.Consumer, partitions: list[TopicPartition]
    ) -> None:
        # Callbacks run inside consume(), between batches: everything handled before was
        # acknowledged and committed already, so there is nothing to hand over.
        self.rebalancing = True
        self.assigned -= {tp.partition for tp in partitions}

    def _assigned(self, partitions: Sequence[int]) -> None:
        if not self.assignment_seen and not partitions:
            self.busy = True
        self.assignment_seen = True
        self.rebalancing = False
        self.assigned = set(partitions)
        for p in partitions:
            self.parts.setdefault(p, _Partition())
        self.last_activity = time.monotonic()

    # -- the loop ------------------------------------------------------------------------------
    def _finished(self) -> bool:
        if not self.assignment_seen or self.rebalancing:
            return False
        return self.summary.limit_reached or all(self.parts[p].done for p in self.assigned)

    def _loop(self, consumer: confluent_kafka.Consumer) -> None:
        assign_deadline = time.monotonic() + self.options.assign_timeout_s
        while True:
            if self.busy:
                raise ReplayBusy(
                    f"group {self.group!r} gave this run no partition of {self.dlq!r}: "
                    "is another replay of it running?"
                )
            if self._finished():
                return
            if self.stop.is_set():
                self.summary.interrupted = True
                return
            if not self.assignment_seen and time.monotonic() > assign_deadline:
                detail = f" (last error: {self.last_error})" if self.last_error else ""
                raise BrokerUnavailable(
                    f"no partition of {self.dlq!r} assigned to group {self.group!r} within "
                    f"{self.options.assign_timeout_s:.0f}s{detail}"
                )
            messages = consumer.consume(self.batch_size, POLL_S)
            now = time.monotonic()
            if messages:
                self.last_activity = now
                self._handle(consumer, messages)
            elif (
                self.assignment_seen
                and not self.rebalancing
                and now - self.last_activity > self.options.idle_timeout_s
            ):
                log.warning(
                    "no end-of-partition event: assuming the DLQ is caught up",
                    dlq=self.dlq,
                    idle_s=self.options.idle_timeout_s,
                )
                return

    def _handle(self, consumer: confluent_kafka.Consumer, messages: list[Any]) -> None:
        pending: dict[int, int] = {}
        counts: dict[str, ClassCounts] = {}
        refusals: list[Refusal] = []
        read = 0
        error: ReplayError | None = None
        for message in messages:
            kafka_error: KafkaError | None = message.error()
            partition: int = message.partition()
            offset: int = message.offset()
            if kafka_error is not None:
                if kafka_error.code() == KafkaError._PARTITION_EOF:
                    self._eof(consumer, partition, offset)
                    continue
                if kafka_error.fatal() or not kafka_error.retriable():
                    error = BrokerUnavailable(f"cannot read {self.dlq!r}: {kafka_error.str()}")
                    break
                continue  # librdkafka retries transient fetch errors itself
            state = self.parts.get(partition)
            if state is None or state.done or partition not in self.assigned:
                continue
            if state.start is None:
                state.start = offset
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.dlq, partition), cached=True
                )
                state.end = high if high > offset else None
                self._update_total()
            if state.end is not None and offset >= state.end:
                self._finish_partition(consumer, partition)
                continue
            if self.stop.is_set():
                break
            record = DlqRecord.from_message(message, self.dlq)
            verdict = judge(record, self.options)
            by_class = counts.setdefault(record.error_class, ClassCounts())
            if verdict is Verdict.SKIP:
                by_class.skipped += 1
            elif verdict is Verdict.REFUSE:
                by_class.refused += 1
                refusals.append(_refusal(record))
            elif not self.options.dry_run:
                if self.pacer is not None and not self.pacer.wait(self.stop):
                    break
                try:
                    self._publish(record)
                except ReplayError as exc:
                    error = exc
                    break
                by_class.replayed += 1
            else:
                by_class.replayed += 1  # would be
            pending[partition] = offset + 1
            read += 1
            if state.end is not None and offset + 1 >= state.end:
                self._finish_partition(consumer, partition)
            limit = self.options.limit
            if limit is not None and self.summary.replayed + _replayed(counts) >= limit:
                self.summary.limit_reached = True
                break
        self._settle(consumer, pending, counts, refusals, read)
        if error is not None:
            raise error

    def _publish(self, record: DlqRecord) -> None:
        assert self.producer is not None
        topic = record.original_topic
        if topic not in self.topics:
            self.topics = self._list_topics()  # created since the run started?
            if topic not in self.topics:
                raise UnknownTopic(
                    f"original topic {topic!r} of {self.dlq}[{record.partition}]@{record.offset} "
                    "does not exist"
                )
        # Back to the partition it came from: the CRM's partitioner (Java's murmur2, say) may
        # differ from librdkafka's, and per-entity order lives in that partition.
        partition = record.original_partition
        if partition is None or not 0 <= partition < self.topics[topic]:
            partition = None
        try:
            self.producer.send(
                topic, record.key, record.value, record.replayed_headers(), partition=partition
            )
        except ProducerError as exc:
            raise DeliveryFailed(f"cannot re-publish to {topic!r}: {exc}") from None

    def _settle(
        self,
        consumer: confluent_kafka.Consumer,
        pending: dict[int, int],
        counts: dict[str, ClassCounts],
        refusals: list[Refusal],
        read: int,
    ) -> None:
        """Acknowledged, then committed, then counted: the summary only holds settled work."""
        if self.producer is not None and _replayed(counts):
            try:
                self.producer.flush(FLUSH_TIMEOUT_S)
            except ProducerError as exc:
                raise DeliveryFailed(f"re-published records not acknowledged: {exc}") from None
        if pending and not self.options.dry_run:
            offsets = [TopicPartition(self.dlq, p, o) for p, o in sorted(pending.items())]
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                raise DeliveryFailed(
                    f"records re-published but the DLQ offsets not committed (the next run "
                    f"replays them again; the service dedupes them): {exc.args[0]}"
                ) from None
        for error_class, c in counts.items():
            self.summary.counts(error_class).add(c)
        self.summary.refusals.extend(refusals)
        self.summary.read += read
        if self.on_progress is not None and (read or pending):
            self.on_progress(self.summary)

    def _eof(self, consumer: confluent_kafka.Consumer, partition: int, offset: int) -> None:
        state = self.parts.get(partition)
        if state is None or partition not in self.assigned:
            return
        if state.start is None:
            state.start = offset
        if state.end is None:
            state.end = offset
        self._update_total()
        self._finish_partition(consumer, partition)
        self.last_activity = time.monotonic()

    def _finish_partition(self, consumer: confluent_kafka.Consumer, partition: int) -> None:
        state = self.parts[partition]
        if state.done:
            return
        state.done = True
        with contextlib.suppress(KafkaException):  # revoked meanwhile: nothing to stop
            consumer.pause([TopicPartition(self.dlq, partition)])

    def _update_total(self) -> None:
        states = [self.parts[p] for p in self.assigned]
        if all(s.end is not None and s.start is not None for s in states):
            self.summary.total = sum(max(0, (s.end or 0) - (s.start or 0)) for s in states)

    def close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()  # leaves the group; nothing is auto-committed
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing the DLQ consumer failed", error=str(exc))
        if self.producer is not None:
            try:
                self.producer.close(timeout_s=10.0)
            except ProducerError as exc:
                # Only reachable on an error path (settled batches were flushed): the records
                # left were not committed, so the next run replays them.
                log.warning("closing the producer failed", error=str(exc))


def _replayed(counts: dict[str, ClassCounts]) -> int:
    return sum(c.replayed for c in counts.values())


def _refusal(record: DlqRecord) -> Refusal:
    return Refusal(
        partition=record.partition,
        offset=record.offset,
        error_class=record.error_class,
        replay_count=record.replay_count,
        original_topic=record.original_topic,
        key=record.key.decode("utf-8", "replace") if record.key is not None else None,
    )
