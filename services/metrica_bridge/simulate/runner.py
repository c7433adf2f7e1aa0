"""Producing a simulated stream to Kafka, at a rate, with an optional manifest."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from metrica_bridge.kafka.producer import Producer
from metrica_bridge.simulate.model import SimulatedMessage


@dataclass
class Stats:
    messages: int = 0
    bytes: int = 0
    by_topic: Counter[str] = field(default_factory=Counter)
    by_fate: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.messages / self.elapsed_s if self.elapsed_s > 0 else 0.0


def produce(
    messages: Iterable[SimulatedMessage],
    producer: Producer,
    rate: float = 0.0,
    *,
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 1_000,
    flush_timeout_s: float = 60.0,
) -> Stats:
    """Produce every message (``rate`` messages/s, 0 = as fast as possible), then flush.

    Returns once the broker acknowledged everything; raises the producer's
    :class:`~metrica_bridge.kafka.producer.UndeliveredError` otherwise.
    """
    stats = Stats()
    tally: dict[tuple[str, str], int] = {}
    send = producer.send
    started = time.monotonic()
    interval = 1.0 / rate if rate > 0 else 0.0
    count = 0
    size = 0
    for message in messages:
        if interval:
            # Pace against the schedule, not the previous message, so the rate holds on average.
            delay = started + count * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        send(message.topic, message.key, message.value)
        count += 1
        size += len(message.value)
        group = (message.topic, message.fate)
        tally[group] = tally.get(group, 0) + 1
        if on_progress is not None and count % progress_every == 0:
            on_progress(count)
    producer.flush(flush_timeout_s)
    stats.elapsed_s = time.monotonic() - started
    stats.messages, stats.bytes = count, size
    for (topic, fate), n in tally.items():
        stats.by_topic[topic] += n
        stats.by_fate[str(fate)] += n
    if on_progress is not None:
        on_progress(count)
    return stats


def with_manifest(messages: Iterable[SimulatedMessage], out: IO[str]) -> Iterator[SimulatedMessage]:
    """Pass messages through, writing one JSON line per message to ``out``."""
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    for message in messages:
        out.write(dumps(message.manifest()))
        out.write("\n")
        yield message


def read_manifest(lines: Iterable[str]) -> Iterator[dict[str, object]]:
    for line in lines:
        if line.strip():
            yield json.loads(line)
