"""One DLQ record as replay sees it, and the verdict on it: replay, skip (filter) or refuse (cap)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import confluent_kafka

from metrica_bridge.replay.options import ReplayOptions, parse_when
from metrica_bridge.steps.dlq import (
    HEADER_PREFIX,
    REPLAY_COUNT,
    VALUE_DROPPED,
    count_header,
    header,
)

UNKNOWN_CLASS = "unknown"
DLQ_SUFFIX = ".dlq"


class Verdict(StrEnum):
    REPLAY = "replay"
    SKIP = "skip"  # does not match this run's filters
    REFUSE = "refuse"  # replayed too often already, or its value is not in the DLQ


def _int(text: str | None) -> int | None:
    return count_header(text)  # strict: ASCII digits, bounded (a header is anyone's to write)


def _bytes(value: str | bytes | None) -> bytes:
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8") if value else b""


@dataclass(frozen=True, slots=True)
class DlqRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    error_class: str
    failed_at: datetime | None
    replay_count: int
    original_topic: str
    original_partition: int | None

    @classmethod
    def from_message(cls, message: confluent_kafka.Message, dlq_topic: str) -> DlqRecord:
        raw = message.headers() or []
        items = raw.items() if isinstance(raw, dict) else raw
        headers = tuple((k, _bytes(v)) for k, v in items)
        failed_at_text = header(headers, "dlq.failed.at")
        try:
            failed_at = parse_when(failed_at_text) if failed_at_text else None
        except ValueError:
            failed_at = None
        # A record without its origin (not written by the service) goes back to the topic the
        # DLQ is named after.
        fallback = dlq_topic.removesuffix(DLQ_SUFFIX)
        return cls(
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            key=message.key(),
            value=message.value(),
            headers=headers,
            error_class=header(headers, "dlq.error.class") or UNKNOWN_CLASS,
            failed_at=failed_at,
            replay_count=max(0, _int(header(headers, REPLAY_COUNT)) or 0),
            original_topic=header(headers, "dlq.original.topic") or fallback,
            original_partition=_int(header(headers, "dlq.original.partition")),
        )

    def replayed_headers(self) -> list[tuple[str, bytes]]:
        """The original headers, without the previous failure's ``dlq.*`` details, plus the
        incremented replay count (the service keeps it when the record fails again)."""
        kept = [(k, v) for k, v in self.headers if not k.startswith(HEADER_PREFIX)]
        return [*kept, (REPLAY_COUNT, str(self.replay_count + 1).encode("ascii"))]


def judge(record: DlqRecord, options: ReplayOptions) -> Verdict:
    """Filters first (a record this run does not ask for is never "refused"), then the cap."""
    if options.error_classes and record.error_class not in options.error_classes:
        return Verdict.SKIP
    if options.since is not None or options.until is not None:
        if record.failed_at is None:
            return Verdict.SKIP
        if options.since is not None and record.failed_at < options.since:
            return Verdict.SKIP
        if options.until is not None and record.failed_at >= options.until:
            return Verdict.SKIP
    if record.replay_count >= options.max_replays:
        return Verdict.REFUSE
    if header(record.headers, VALUE_DROPPED) is not None:
        # A stub (the record was too large for the DLQ): replaying it would publish an empty
        # value. The original is at dlq.original.topic/partition/offset.
        return Verdict.REFUSE
    return Verdict.REPLAY
