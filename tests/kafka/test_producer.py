"""The producer wrapper: deliveries, headers and timestamps arrive; failures always surface."""

from __future__ import annotations

import asyncio

import pytest

from metrica_bridge.config import Settings
from metrica_bridge.kafka.broker import EmbeddedBroker
from metrica_bridge.kafka.producer import (
    DeliveryError,
    Producer,
    ProducerError,
    UndeliveredError,
)
from metrica_bridge.kafka.settings import for_consumer, producer_config
from tests.support.kafka import TopicFactory, consume_all


def test_produce_resolves_futures_and_keeps_key_headers_timestamp(
    bootstrap: str, topics: TopicFactory
) -> None:
    topic = topics("produce", partitions=2)
    with Producer({"bootstrap.servers": bootstrap}) as producer:
        future = producer.produce(
            topic, b"deal-1", b"payload", [("trace", b"abc")], timestamp_ms=1_700_000_000_123
        )
        producer.send(topic, None, b"no-key")
        producer.send(topic, b"deal-2", None)  # a tombstone is a legal message
        delivery = future.result(timeout=10)
        producer.flush(10)
    assert delivery.topic == topic
    assert delivery.offset >= 0
    messages = consume_all(bootstrap, topic, 3, timeout=15)
    assert len(messages) == 3
    first = next(m for m in messages if m.key == b"deal-1")
    assert (first.partition, first.offset) == (delivery.partition, delivery.offset)
    assert first.value == b"payload"
    assert first.headers == [("trace", b"abc")]
    assert first.timestamp_ms == 1_700_000_000_123
    assert {m.value for m in messages} == {b"payload", b"no-key", None}


async def test_futures_can_be_awaited(bootstrap: str, topics: TopicFactory) -> None:
    topic = topics("await")
    with Producer({"bootstrap.servers": bootstrap}) as producer:
        delivery = await asyncio.wait_for(
            asyncio.wrap_future(producer.produce(topic, b"k", b"v")), timeout=10
        )
    assert delivery.topic == topic


def test_an_unknown_partition_fails_the_future_and_the_flush(
    bootstrap: str, topics: TopicFactory
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer._producer.list_topics(timeout=10)  # before the topic exists: see the test below
    topic = topics("bad-partition", partitions=1)
    future = producer.produce(topic, b"k", b"v", partition=7)
    producer.send(topic, b"k", b"v", partition=7)
    with pytest.raises(DeliveryError, match="UNKNOWN_PARTITION") as failure:
        future.result(timeout=10)
    assert failure.value.topic == topic
    with pytest.raises(UndeliveredError) as undelivered:
        producer.flush(10)
    assert undelivered.value.failed == 2
    assert undelivered.value.remaining == 0
    # The failure was reported once; the producer keeps working.
    producer.send(topic, b"k", b"ok")
    producer.close(10)


def test_flush_raises_while_messages_stay_undelivered() -> None:
    with EmbeddedBroker() as lonely:
        bootstrap = lonely.bootstrap
        producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 1500})
        producer.produce("gone", b"k", b"warm-up").result(timeout=10)  # auto-created topic
    # The broker is dead now: the message can be neither delivered nor forgotten silently.
    future = producer.produce("gone", b"k", b"lost")
    with pytest.raises(UndeliveredError) as still_queued:
        producer.flush(0.2)
    assert still_queued.value.remaining == 1
    with pytest.raises(DeliveryError, match="TIMED_OUT"):
        future.result(timeout=10)
    with pytest.raises(UndeliveredError) as failed:
        producer.flush(5)
    assert failed.value.failed == 1
    producer.close(1)  # each failure is reported once; nothing is left


def test_a_message_over_the_local_size_limit_raises_at_once(bootstrap: str) -> None:
    with (
        Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 2000}) as producer,
        pytest.raises(ProducerError, match="MSG_SIZE_TOO_LARGE"),
    ):
        producer.send("anything", b"k", b"x" * 5000)


def test_settings_layering_defaults_env_code() -> None:
    settings = Settings(
        kafka_bootstrap_servers="10.0.0.1:9092",
        kafka_properties={"linger.ms": "50", "security.protocol": "SSL"},
    )
    config = producer_config(settings, compression_type="zstd")
    assert config["bootstrap.servers"] == "10.0.0.1:9092"
    assert config["acks"] == "all"
    assert config["enable.idempotence"] == "true"
    assert config["linger.ms"] == "50"  # KAFKA_LINGER_MS beats our default
    assert config["security.protocol"] == "SSL"
    assert config["compression.type"] == "zstd"  # code beats both


def test_consumer_only_overrides_are_kept_away_from_producers() -> None:
    settings = Settings(
        kafka_properties={"session.timeout.ms": "6000", "fetch.wait.max.ms": "50", "acks": "1"}
    )
    config = producer_config(settings, enable_idempotence=False)
    assert "session.timeout.ms" not in config
    assert "fetch.wait.max.ms" not in config
    assert config["acks"] == "1"
    assert for_consumer(settings.kafka_common()) == {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "session.timeout.ms": "6000",
        "fetch.wait.max.ms": "50",
    }


def test_a_producer_without_futures_still_reports_failures(
    bootstrap: str, topics: TopicFactory
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap}, futures=False)
    # The failure must come from the delivery report, so the producer must not know the topic's
    # partitions when the bad message is sent: librdkafka then queues it and fails it once the
    # metadata says there is no partition 3. Knowing them, produce() refuses at once, and that
    # raced: the producer's first metadata could list the topic already, or the metadata of a
    # message sent before it arrive in between (seen in CI). So: the producer's first metadata
    # is in before the topic exists, and the bad message is the first sent to it.
    producer._producer.list_topics(timeout=10)
    topic = topics("no-futures", partitions=1)
    with pytest.raises(ProducerError, match="send"):
        producer.produce(topic, b"k", b"v")
    producer.send(topic, b"k", b"lost", partition=3)
    producer.send(topic, b"k", b"fine")
    with pytest.raises(UndeliveredError) as undelivered:
        producer.flush(10)
    assert (undelivered.value.failed, undelivered.value.remaining) == (1, 0)
    producer.close(5)
    assert [m.value for m in consume_all(bootstrap, topic, 1, timeout=15)] == [b"fine"]
