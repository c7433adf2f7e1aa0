"""Shared fixtures: the embedded tansu broker, per-test topics, PostgreSQL from pgserver.

Tests that use the ``broker`` (or ``topics``) fixture are marked ``kafka``, those that use
``postgres_url`` are marked ``postgres``, so ``-m "not kafka"`` runs without any server.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metrica_bridge.kafka.broker import EmbeddedBroker
from metrica_bridge.sandbox import SandboxServer
from tests.support import crm
from tests.support.kafka import TopicFactory
from tests.support.postgres import create_database, drop_database, start_server
from tests.support.stack import COUNTER, STATUS_MAP, TOKEN

_KAFKA_FIXTURES = {"broker", "bootstrap", "topics"}
_POSTGRES_FIXTURES = {"postgres_server_url", "postgres_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _KAFKA_FIXTURES:
            item.add_marker(pytest.mark.kafka)
        if fixtures & _POSTGRES_FIXTURES:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as embedded:
        yield embedded


@pytest.fixture(scope="session")
def bootstrap(broker: EmbeddedBroker) -> str:
    return broker.bootstrap


@pytest.fixture
def topics(bootstrap: str) -> Iterator[TopicFactory]:
    factory = TopicFactory(bootstrap)
    yield factory
    factory.cleanup()


@pytest.fixture(scope="session")
def _pgserver() -> Iterator[Any]:
    server = start_server()
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(Path(server.pgdata).parent, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server_url(_pgserver: Any) -> str:
    """The server's maintenance database (``postgres``); tests want ``postgres_url``."""
    return str(_pgserver.get_uri())


@pytest.fixture
def postgres_url(_pgserver: Any) -> Iterator[str]:
    """A fresh, empty database for this test, dropped afterwards."""
    name, uri = create_database(_pgserver)
    yield uri
    drop_database(_pgserver, name)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """The Metrica sandbox with the test status map already pushed (schema-sync done)."""
    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], port=0) as server:
        crm.push_status_map(server.url)
        yield server


@pytest.fixture
def status_map(tmp_path: Path) -> Path:
    """The status map file the service reads (``STATUS_MAP_FILE``)."""
    path = tmp_path / "status_map.yaml"
    path.write_text(STATUS_MAP)
    return path
