"""Dead-letter topics (DESIGN.md §5): ``<topic>.dlq``, original key and value bytes untouched,
``dlq.*`` headers added, the original headers kept.

The engine marks a dead-lettered record handled only after the broker acknowledged the DLQ
record, so a crash in between re-delivers the original instead of losing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from confluent_kafka import KafkaError

from metrica_bridge.kafka.producer import DeliveryError, Producer
from metrica_bridge.kafka.record import SourceRecord
from metrica_bridge.logs import get_logger, redact
from metrica_bridge.metrics import DLQ_RECORDS
from metrica_bridge.outcomes import ErrorClass

HEADER_PREFIX = "dlq."
REPLAY_COUNT = "dlq.replay.count"
# Set on a dead letter too large for the DLQ topic: its value (and a large key) stayed behind,
# readable at the original topic, partition and offset until that topic's retention ends.
VALUE_DROPPED = "dlq.value.dropped"
MAX_MESSAGE = 500
# What a DLQ record may weigh: librdkafka's message.max.bytes default (1,000,000), which Kafka
# brokers' own default (1 MiB) also admits. A record over it fails every time
# (MSG_SIZE_TOO_LARGE): it goes as a headers-only stub instead of retrying forever.
MAX_RECORD_BYTES = 1_000_000
MAX_STUB_KEY = 1_024
MAX_COUNT_DIGITS = 9  # a header count beyond 999,999,999 is not a count

T = TypeVar("T")
log = get_logger("metrica_bridge.steps.dlq")


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


def header(headers: tuple[tuple[str, bytes], ...], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", "replace")
    return None


def count_header(text: str | None) -> int | None:
    """A count header (``dlq.replay.count``, ``dlq.attempts``, ``dlq.original.partition``…):
    ASCII digits only, at most MAX_COUNT_DIGITS of them, else None. ``str.isdigit`` is not
    enough: "²" passes it and ``int()`` then raises."""
    if text is None or not 0 < len(text) <= MAX_COUNT_DIGITS or not text.isascii():
        return None
    return int(text) if text.isdigit() else None


def replay_count(record: SourceRecord) -> int:
    """``dlq.replay.count``, 0 when absent or not a count."""
    return count_header(header(record.headers, REPLAY_COUNT)) or 0


def is_replay(record: SourceRecord) -> bool:
    """Re-published by ``metrica-bridge replay`` (it sets ``dlq.replay.count`` ≥ 1)."""
    return replay_count(record) > 0


def dlq_headers(
    record: SourceRecord, error_class: ErrorClass, message: str, attempts: int
) -> list[tuple[str, bytes]]:
    replays = str(replay_count(record))
    # A replayed record carries the dlq.* headers of its previous failure: replace them, keep the
    # rest (the CRM's own headers) as they came.
    kept = [(k, v) for k, v in record.headers if not k.startswith(HEADER_PREFIX)]
    ours = {
        "dlq.original.topic": record.topic,
        "dlq.original.partition": str(record.partition),
        "dlq.original.offset": str(record.offset),
        "dlq.original.timestamp": str(
            record.timestamp_ms if record.timestamp_ms is not None else ""
        ),
        "dlq.error.class": error_class.value,
        "dlq.error.message": redact(message)[:MAX_MESSAGE],
        "dlq.failed.at": datetime.now(UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "dlq.attempts": str(attempts),
        REPLAY_COUNT: replays,
    }
    return kept + [(k, v.encode("utf-8")) for k, v in ours.items()]


def _size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers)


def stub(
    record: SourceRecord, error_class: ErrorClass, message: str, attempts: int
) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The key (when small) and the ``dlq.*`` headers of a record too large for the DLQ, saying
    so: the original stays readable at its topic, partition and offset."""
    size = _size(record.key, record.value, list(record.headers))
    note = (
        f"{message}; the record ({size} bytes) is too large for the DLQ: only its headers are here"
    )
    headers = [
        (k, v)
        for k, v in dlq_headers(record, error_class, note, attempts)
        if k.startswith(HEADER_PREFIX)
    ]
    key = record.key if record.key is not None and len(record.key) <= MAX_STUB_KEY else None
    return key, [*headers, (VALUE_DROPPED, str(size).encode("ascii"))]


@dataclass(frozen=True, slots=True)
class DeadLetter(Generic[T]):
    """One record to dead-letter, and whatever the caller finishes once it is in the DLQ."""

    subject: T
    record: SourceRecord
    error_class: ErrorClass
    reason: str
    attempts: int


class DeadLetters:
    def __init__(self, producer: Producer, max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        self._producer = producer
        self._max = max_record_bytes

    async def send(
        self, record: SourceRecord, error_class: ErrorClass, message: str, attempts: int = 1
    ) -> None:
        """Produce to ``<topic>.dlq`` and return once the broker acknowledged it. A record the
        DLQ cannot hold goes as a headers-only :func:`stub`. The produce call runs off the
        event loop: with librdkafka's queue full it waits for room."""
        headers = dlq_headers(record, error_class, message, attempts)
        key, value = record.key, record.value
        if _size(key, value, headers) > self._max:
            (key, headers), value = stub(record, error_class, message, attempts), None
        try:
            await self._produce(record, key, value, headers)
        except DeliveryError as exc:
            if exc.code != KafkaError.MSG_SIZE_TOO_LARGE or value is None:
                raise
            # The broker's limit is lower than ours: the stub always fits.
            key, headers = stub(record, error_class, message, attempts)
            await self._produce(record, key, None, headers)
        DLQ_RECORDS.labels(topic=record.topic, error_class=error_class.value).inc()

    async def send_all(
        self,
        items: Sequence[DeadLetter[T]],
        on_sent: Callable[[DeadLetter[T]], None],
        on_failed: Callable[[DeadLetter[T]], None],
        delays: Sequence[float],
    ) -> None:
        """Produce every item, retrying the ones the broker refused until it has them all:
        an event is recorded dead-lettered only once its record is in the DLQ (a crash meanwhile
        redelivers the original). Nothing to drop and nowhere else to put it, so the partition
        holds (it commits nothing past it), ``on_failed`` counts the failure for the alert, and
        the wait grows along ``delays``."""
        tries = 0
        while items:
            sent = await asyncio.gather(
                *(self.send(i.record, i.error_class, i.reason, i.attempts) for i in items),
                return_exceptions=True,
            )
            failed = []
            error = ""
            for item, result in zip(items, sent, strict=True):
                if isinstance(result, BaseException):
                    failed.append(item)
                    on_failed(item)
                    error = f"{type(result).__name__}: {result}"
                else:
                    on_sent(item)
            if failed:
                delay = delays[min(tries, len(delays) - 1)]
                tries += 1
                log.error(
                    "dead-letter produce failed; retrying",
                    count=len(failed),
                    error=error,
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
            items = failed

    async def _produce(
        self,
        record: SourceRecord,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> None:
        future = await asyncio.to_thread(
            self._producer.produce,
            dlq_topic(record.topic),
            key,
            value,
            headers,
            record.timestamp_ms,
        )
        await asyncio.wrap_future(future)
