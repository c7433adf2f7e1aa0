"""The pieces every integration test uses: a sandbox with the status map pushed, the map file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from metrica_bridge.sandbox import SandboxServer
from tests.support import crm
from tests.support.stack import COUNTER, STATUS_MAP, TOKEN


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], port=0) as server:
        crm.push_status_map(server.url)
        yield server


@pytest.fixture
def status_map(tmp_path: Path) -> Path:
    path = tmp_path / "status_map.yaml"
    path.write_text(STATUS_MAP)
    return path
