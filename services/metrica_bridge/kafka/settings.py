"""librdkafka properties for the clients we create, layered: our defaults < ``KAFKA_*`` < code.

``Settings.kafka_common()`` carries the bootstrap servers and every ``KAFKA_<PROPERTY>``
override from the environment; the operator's overrides win over our defaults, and explicit
arguments in code (a test, a CLI flag) win over both.
"""

from __future__ import annotations

from collections.abc import Mapping

from metrica_bridge.config import Settings

# acks=all + idempotence: no duplicates or reordering from producer retries. lz4 is cheap on
# CPU and supported by Kafka and tansu alike. A small linger batches the bursts the simulator,
# the DLQ and replay produce without adding noticeable latency.
PRODUCER_DEFAULTS: dict[str, str] = {
    "acks": "all",
    "enable.idempotence": "true",
    "linger.ms": "5",
    "compression.type": "lz4",
    "client.id": "metrica-bridge",
}


# KAFKA_* overrides apply to every client (DESIGN.md §6), but librdkafka warns at start-up about
# each property meant for the other client type; each client gets only what concerns it.
CONSUMER_ONLY = frozenset(
    {
        "group.id",
        "group.instance.id",
        "group.protocol",
        "group.protocol.type",
        "group.remote.assignor",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "coordinator.query.interval.ms",
        "max.poll.interval.ms",
        "enable.auto.commit",
        "auto.commit.interval.ms",
        "enable.auto.offset.store",
        "queued.min.messages",
        "queued.max.messages.kbytes",
        "fetch.wait.max.ms",
        "fetch.queue.backoff.ms",
        "fetch.message.max.bytes",
        "max.partition.fetch.bytes",
        "fetch.max.bytes",
        "fetch.min.bytes",
        "fetch.error.backoff.ms",
        "isolation.level",
        "enable.partition.eof",
        "check.crcs",
        "auto.offset.reset",
        "consume.callback.max.messages",
    }
)
PRODUCER_ONLY = frozenset(
    {
        "transactional.id",
        "transaction.timeout.ms",
        "enable.idempotence",
        "enable.gapless.guarantee",
        "queue.buffering.max.messages",
        "queue.buffering.max.kbytes",
        "queue.buffering.max.ms",
        "linger.ms",
        "message.send.max.retries",
        "retries",
        "queue.buffering.backpressure.threshold",
        "compression.codec",
        "compression.type",
        "compression.level",
        "batch.num.messages",
        "batch.size",
        "delivery.report.only.error",
        "sticky.partitioning.linger.ms",
        "request.required.acks",
        "acks",
        "request.timeout.ms",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "partitioner",
    }
)


def for_producer(props: Mapping[str, str]) -> dict[str, str]:
    """``props`` without consumer-only properties (also right for admin clients)."""
    return {name: value for name, value in props.items() if name not in CONSUMER_ONLY}


def for_consumer(props: Mapping[str, str]) -> dict[str, str]:
    """``props`` without producer-only properties."""
    return {name: value for name, value in props.items() if name not in PRODUCER_ONLY}


def layered(*layers: Mapping[str, object]) -> dict[str, str]:
    """Merge property layers, later ones winning, values as strings (librdkafka takes both)."""
    merged: dict[str, str] = {}
    for layer in layers:
        for name, value in layer.items():
            merged[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return merged


def producer_config(settings: Settings, **overrides: object) -> dict[str, str]:
    """Properties for a producer; keyword names use underscores for dots (``linger_ms=0``)."""
    return layered(
        PRODUCER_DEFAULTS,
        for_producer(settings.kafka_common()),
        {name.replace("_", "."): value for name, value in overrides.items()},
    )


def admin_config(settings: Settings) -> dict[str, str]:
    return for_producer(settings.kafka_common())
