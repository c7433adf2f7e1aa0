"""Fixtures for the codec tests: a codec without a registry, and a real (tiny) registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from metrica_bridge.codec import Codec
from tests.codec.records import SCHEMAS_DIR
from tests.support.schema_registry import SchemaRegistryServer


@pytest.fixture(scope="session")
def codec() -> Iterator[Codec]:
    """A codec without a registry (the default deployment)."""
    with Codec.from_dir(SCHEMAS_DIR) as instance:
        yield instance


@pytest.fixture
def registry() -> Iterator[SchemaRegistryServer]:
    with SchemaRegistryServer() as server:
        yield server
