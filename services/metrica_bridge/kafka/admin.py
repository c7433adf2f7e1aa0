"""Topic administration: explicit creation and deletion.

Never ask for one topic's metadata by name (``AdminClient.list_topics(name)``): brokers with
auto-creation (tansu cannot switch it off) create the topic with their default partition count.
We always list every topic instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from metrica_bridge.kafka.settings import for_producer
from metrica_bridge.logs import kafka_logger

KafkaConfig = Mapping[str, str] | str
"""librdkafka properties (e.g. ``Settings.kafka_common()``), or just a bootstrap address."""


class TopicError(RuntimeError):
    """A topic could not be created, deleted, or did not show up in metadata in time."""


def admin_client(config: KafkaConfig) -> AdminClient:
    # An admin client is a producer to librdkafka: consumer properties only cause warnings.
    props: dict[str, Any] = (
        {"bootstrap.servers": config} if isinstance(config, str) else for_producer(config)
    )
    full: dict[str, Any] = {**props, "logger": kafka_logger()}
    return AdminClient(full)


def list_topics(config: KafkaConfig | AdminClient, *, timeout_s: float = 10.0) -> dict[str, int]:
    """Every topic the cluster reports, with its partition count (internal topics excluded)."""
    admin = config if isinstance(config, AdminClient) else admin_client(config)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise TopicError(f"cannot list topics: {exc.args[0]}") from None
    return {
        name: len(topic.partitions)
        for name, topic in metadata.topics.items()
        if topic.error is None and not name.startswith("__")
    }


def require_topics(
    config: KafkaConfig, names: Iterable[str], *, timeout_s: float = 10.0
) -> dict[str, int]:
    """The partition counts of ``names``; :class:`TopicError` naming those the cluster lacks."""
    found = list_topics(config, timeout_s=timeout_s)
    missing = sorted(set(names) - found.keys())
    if missing:
        raise TopicError(
            f"missing topics: {', '.join(missing)} (create them, or set CREATE_TOPICS)"
        )
    return {name: found[name] for name in names}


def ensure_topics(
    config: KafkaConfig,
    topics: Mapping[str, int],
    *,
    replication_factor: int = -1,
    timeout_s: float = 30.0,
) -> dict[str, int]:
    """Create the missing topics (``{name: partitions}``) and wait until metadata shows them.

    Existing topics are left alone, whatever their partition count; the returned mapping holds
    the partition counts the cluster actually has. ``replication_factor=-1`` means the broker's
    default (KIP-464).
    """
    admin = admin_client(config)
    deadline = time.monotonic() + timeout_s
    existing = list_topics(admin, timeout_s=timeout_s)
    missing = [name for name in topics if name not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(name, topics[name], replication_factor) for name in missing],
            request_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=max(0.1, deadline - time.monotonic()))
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                # Another instance (or a test) may have created it a moment ago: that's fine.
                if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopicError(f"cannot create topic {name!r}: {error.str()}") from None
            except FutureTimeout:
                raise TopicError(f"creating topic {name!r} timed out") from None
    while True:
        existing = list_topics(admin, timeout_s=max(0.1, deadline - time.monotonic()))
        if all(name in existing for name in topics):
            return {name: existing[name] for name in topics}
        if time.monotonic() > deadline:
            absent = sorted(set(topics) - set(existing))
            raise TopicError(f"topics not visible in metadata after {timeout_s}s: {absent}")
        time.sleep(0.05)


def delete_topics(config: KafkaConfig, names: Iterable[str], *, timeout_s: float = 30.0) -> None:
    """Delete topics (absent ones are ignored) and wait until metadata no longer shows them."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return
    admin = admin_client(config)
    deadline = time.monotonic() + timeout_s
    present = [name for name in wanted if name in list_topics(admin, timeout_s=timeout_s)]
    if not present:
        return
    for name, future in admin.delete_topics(present, request_timeout=timeout_s).items():
        try:
            future.result(timeout=max(0.1, deadline - time.monotonic()))
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise TopicError(f"cannot delete topic {name!r}: {error.str()}") from None
        except FutureTimeout:
            raise TopicError(f"deleting topic {name!r} timed out") from None
    while True:
        existing = list_topics(admin, timeout_s=max(0.1, deadline - time.monotonic()))
        if not any(name in existing for name in present):
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topics still visible after deletion: {sorted(present)}")
        time.sleep(0.05)
