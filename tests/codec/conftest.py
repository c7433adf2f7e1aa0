"""Fixtures for the codec tests: a codec without a registry, and a real (tiny) registry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from metrica_bridge import events
from metrica_bridge.codec import Codec
from tests.codec.records import SCHEMAS_DIR
from tests.support.schema_registry import SchemaRegistryServer


@pytest.fixture(scope="session")
def codec() -> Iterator[Codec]:
    """A codec without a registry (the default deployment)."""
    with Codec.from_dir(SCHEMAS_DIR) as instance:
        yield instance


@pytest.fixture(scope="session")
def _registries() -> Iterator[list[SchemaRegistryServer]]:
    servers: list[SchemaRegistryServer] = []
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def registry(_registries: list[SchemaRegistryServer]) -> SchemaRegistryServer:
    """An empty registry; reused across tests unless a test stopped it (an outage)."""
    if _registries and _registries[-1].running:
        _registries[-1].reset()
    else:
        _registries.append(SchemaRegistryServer().start())
    return _registries[-1]


@pytest.fixture(autouse=True)
def _admit_2038(monkeypatch: pytest.MonkeyPatch) -> None:
    """The records include 2038-01-19T03:14:08Z (a second past the 32-bit Unix time boundary),
    a future time: admit it here (the clock-skew rule is tested in tests/test_events.py)."""
    monkeypatch.setattr(events, "_max_skew", timedelta(days=365 * 30))
