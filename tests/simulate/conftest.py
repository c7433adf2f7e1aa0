"""Fixtures for the simulator tests: a registry-less codec and one reference stream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from metrica_bridge.codec import Codec
from metrica_bridge.config import Settings
from metrica_bridge.simulate import SimulatedMessage, SimulationConfig, generate

NOW_MS = 1_760_000_000_000  # a fixed "now" in the past (a future one is invalid): reproducible


@pytest.fixture(scope="session")
def codec() -> Iterator[Codec]:
    with Codec.from_dir(Settings().schemas_dir) as instance:
        yield instance


@pytest.fixture(scope="session")
def stream_config() -> SimulationConfig:
    return SimulationConfig(
        count=6_000,
        seed=11,
        clients=300,
        duplicates=0.05,
        late=0.05,
        poison=0.04,
        old=0.1,
        now_ms=NOW_MS,
        concurrency=64,
    )


@pytest.fixture(scope="session")
def stream(stream_config: SimulationConfig, codec: Codec) -> list[SimulatedMessage]:
    return list(generate(stream_config, codec))
