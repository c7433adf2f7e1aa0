"""Explicit topic creation and deletion against the real broker."""

from __future__ import annotations

import pytest

from metrica_bridge.kafka.admin import TopicError, delete_topics, ensure_topics, list_topics
from tests.support.kafka import unique_name


def test_ensure_topics_creates_with_the_requested_partitions(bootstrap: str) -> None:
    a, b = unique_name("admin-a"), unique_name("admin-b")
    try:
        assert ensure_topics(bootstrap, {a: 3, b: 1}) == {a: 3, b: 1}
        listed = list_topics(bootstrap)
        assert listed[a] == 3
        assert listed[b] == 1
    finally:
        delete_topics(bootstrap, [a, b])
    listed = list_topics(bootstrap)
    assert a not in listed
    assert b not in listed


def test_ensure_topics_is_idempotent_and_keeps_existing_partitions(bootstrap: str) -> None:
    name = unique_name("admin-again")
    try:
        ensure_topics({"bootstrap.servers": bootstrap}, {name: 2})
        # Asking again (another instance starting, say) neither fails nor changes the topic.
        assert ensure_topics(bootstrap, {name: 6}) == {name: 2}
    finally:
        delete_topics(bootstrap, [name])


def test_delete_ignores_absent_topics(bootstrap: str) -> None:
    delete_topics(bootstrap, [unique_name("never-created")])


def test_an_unreachable_cluster_is_a_topic_error() -> None:
    with pytest.raises(TopicError):
        ensure_topics(
            {"bootstrap.servers": "127.0.0.1:1", "socket.connection.setup.timeout.ms": "1000"},
            {"x": 1},
            timeout_s=1.5,
        )
