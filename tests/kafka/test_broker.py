"""The embedded tansu broker: starts, answers, stops, and survives a port collision."""

from __future__ import annotations

import os
import socket

import pytest
from confluent_kafka.admin import AdminClient

from metrica_bridge.kafka import broker as broker_module
from metrica_bridge.kafka.broker import BrokerError, EmbeddedBroker


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def test_session_broker_answers_metadata(broker: EmbeddedBroker) -> None:
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5)
    assert metadata.cluster_id == broker.cluster_id
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert [(b.host, b.port) for b in metadata.brokers.values()] == [("127.0.0.1", broker.port)]


def test_start_and_stop_kills_the_process_group() -> None:
    with EmbeddedBroker() as embedded:
        pid, port = embedded.pid, embedded.port
        assert pid is not None
        assert embedded.alive()
        assert _listening(port)
    assert not embedded.alive()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not _listening(port)
    with pytest.raises(BrokerError):
        _ = embedded.bootstrap


def test_a_taken_port_is_detected_and_another_port_is_used(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first port "picked" is the session broker's: tansu panics there (and exits 0) while
    # the session broker answers metadata; the launcher must notice and move on.
    ports = iter([broker.port])
    real_free_port = broker_module.free_port
    monkeypatch.setattr(broker_module, "free_port", lambda: next(ports, None) or real_free_port())
    with EmbeddedBroker() as embedded:
        assert embedded.port != broker.port
        metadata = AdminClient({"bootstrap.servers": embedded.bootstrap}).list_topics(timeout=5)
        assert metadata.cluster_id == embedded.cluster_id
    assert broker.alive()


def test_an_explicit_taken_port_fails_clearly(broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerError, match=r"another broker|exited"):
        EmbeddedBroker(port=broker.port, start_timeout_s=5).start()
    assert broker.alive()


def test_a_port_held_by_a_non_kafka_socket_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real_free_port = broker_module.free_port
        monkeypatch.setattr(
            broker_module, "free_port", lambda: next(ports, None) or real_free_port()
        )
        with EmbeddedBroker(start_timeout_s=3) as embedded:
            assert embedded.port != taken
            assert embedded.alive()
