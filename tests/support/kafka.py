"""Kafka helpers for tests: fast consumer settings, per-test topics, reading a topic back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from metrica_bridge.config import Settings
from metrica_bridge.kafka.admin import delete_topics, ensure_topics, list_topics

# Group joins take about half of session.timeout.ms on tansu, and a waiting fetch is not woken
# by new data: these keep a join at ~3 s and produce→consume latency at ~50 ms.
TEST_CONSUMER_PROPERTIES: dict[str, str] = {
    "session.timeout.ms": "6000",
    "heartbeat.interval.ms": "500",
    "fetch.wait.max.ms": "50",
}


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def consumer_config(
    bootstrap: str, group_id: str | None = None, **overrides: object
) -> dict[str, Any]:
    """A consumer config for tests; keyword names use underscores for dots."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id or unique_name("test-group"),
        "auto.offset.reset": "earliest",
        "enable.auto.commit": "false",
        **TEST_CONSUMER_PROPERTIES,
        **{name.replace("_", "."): value for name, value in overrides.items()},
    }


@dataclass(frozen=True)
class ConsumedMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int


def consume_all(
    bootstrap: str,
    topic: str | Iterable[str],
    expected_count: int,
    timeout: float = 30.0,
    *,
    settle_s: float = 0.3,
) -> list[ConsumedMessage]:
    """Every message of the topic(s) from the beginning, in (topic, partition, offset) order.

    Partitions are assigned directly (no group join, so no rebalance wait). Reading stops once
    ``expected_count`` messages arrived and nothing more came for ``settle_s`` — so extra
    messages show up in the result — or at ``timeout``, returning what arrived; the caller
    asserts on the count. End offsets cannot be used: tansu reports them wrongly.
    """
    names = [topic] if isinstance(topic, str) else list(topic)
    partitions = list_topics(bootstrap)
    missing = [name for name in names if name not in partitions]
    assert not missing, f"topics do not exist: {missing}"
    consumer = Consumer(consumer_config(bootstrap))
    consumer.assign(
        [
            TopicPartition(name, partition, OFFSET_BEGINNING)
            for name in names
            for partition in range(partitions[name])
        ]
    )
    messages: list[ConsumedMessage] = []
    deadline = time.monotonic() + timeout
    settled_at: float | None = None
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, timeout=0.1)
            for message in batch:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"consume error: {error.str()}")
                messages.append(
                    ConsumedMessage(
                        topic=message.topic() or "",
                        partition=message.partition() or 0,
                        offset=message.offset() or 0,
                        key=message.key(),
                        value=message.value(),
                        headers=[(k, v or b"") for k, v in _headers(message.headers())],
                        timestamp_ms=message.timestamp()[1],
                    )
                )
            if len(messages) >= expected_count:
                if batch or settled_at is None:
                    settled_at = time.monotonic() + settle_s
                elif time.monotonic() >= settled_at:
                    break
    finally:
        consumer.close()
    messages.sort(key=lambda m: (m.topic, m.partition, m.offset))
    return messages


def _headers(raw: Any) -> list[tuple[str, Any]]:
    if not raw:
        return []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)


class TopicFactory:
    """Creates uniquely named topics for one test and deletes them afterwards."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.created: list[str] = []

    def __call__(self, prefix: str = "topic", partitions: int = 1) -> str:
        return self.many({prefix: partitions})[prefix]

    def many(self, prefixes: Mapping[str, int]) -> dict[str, str]:
        """``{prefix: partitions}`` → ``{prefix: unique topic name}``, all created."""
        names = {prefix: unique_name(prefix) for prefix in prefixes}
        self.created.extend(names.values())
        ensure_topics(self.bootstrap, {names[p]: n for p, n in prefixes.items()})
        return names

    def crm_topics(self, partitions: int = 3) -> dict[str, str]:
        """The three CRM topics, ``{kind: unique name}``; their ``.dlq`` topics, which the
        service creates, are deleted after the test too."""
        names = self.many(
            {
                "lead-created": partitions,
                "deal-status-changed": partitions,
                "payment-received": partitions,
            }
        )
        self.created.extend(f"{name}.dlq" for name in names.values())
        return names

    def crm_settings(self, partitions: int = 3, *, dlq: bool = True, **overrides: Any) -> Settings:
        """Settings pointing at three fresh CRM topics (and their ``.dlq`` topics).

        Consumers built from these settings get the fast test properties; the consumer group
        prefix is unique too, so tests never share committed offsets.
        """
        names = self.many(
            {
                "lead-created": partitions,
                "deal-status-changed": partitions,
                "payment-received": partitions,
            }
        )
        if dlq:
            ensure_topics(self.bootstrap, {f"{name}.dlq": 1 for name in names.values()})
            self.created.extend(f"{name}.dlq" for name in names.values())
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": self.bootstrap,
            "kafka_properties": dict(TEST_CONSUMER_PROPERTIES),
            "topic_lead_created": names["lead-created"],
            "topic_deal_status_changed": names["deal-status-changed"],
            "topic_payment_received": names["payment-received"],
            "consumer_group_prefix": unique_name("test"),
            "create_topics": False,
            **overrides,
        }
        return Settings.model_validate(values)

    def cleanup(self) -> None:
        names, self.created = self.created, []
        delete_topics(self.bootstrap, names)
