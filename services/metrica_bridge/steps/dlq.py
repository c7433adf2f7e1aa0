"""Dead-letter topics (DESIGN.md §5): ``<topic>.dlq``, original key and value bytes untouched,
``dlq.*`` headers added, the original headers kept.

The engine marks a dead-lettered record handled only after the broker acknowledged the DLQ
record, so a crash in between re-delivers the original instead of losing it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from metrica_bridge.kafka.producer import Producer
from metrica_bridge.logs import redact
from metrica_bridge.metrics import DLQ_RECORDS, ErrorClass

HEADER_PREFIX = "dlq."
REPLAY_COUNT = "dlq.replay.count"
MAX_MESSAGE = 500


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A consumed record, as much of it as the DLQ and parking need."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None


def header(headers: tuple[tuple[str, bytes], ...], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", "replace")
    return None


def is_replay(record: SourceRecord) -> bool:
    """Re-published by ``metrica-bridge replay`` (it sets ``dlq.replay.count`` ≥ 1)."""
    count = header(record.headers, REPLAY_COUNT)
    return count is not None and count.isdigit() and int(count) > 0


def dlq_headers(
    record: SourceRecord, error_class: ErrorClass, message: str, attempts: int
) -> list[tuple[str, bytes]]:
    replays = header(record.headers, REPLAY_COUNT) or "0"
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


class DeadLetters:
    def __init__(self, producer: Producer) -> None:
        self._producer = producer

    async def send(
        self, record: SourceRecord, error_class: ErrorClass, message: str, attempts: int = 1
    ) -> None:
        """Produce to ``<topic>.dlq`` and return once the broker acknowledged it."""
        future = self._producer.produce(
            dlq_topic(record.topic),
            record.key,
            record.value,
            dlq_headers(record, error_class, message, attempts),
            timestamp_ms=record.timestamp_ms,
        )
        await asyncio.wrap_future(future)
        DLQ_RECORDS.labels(topic=record.topic, error_class=error_class.value).inc()
