"""Issue 16, item 10: the lease heartbeat does not share a ``try`` with the quota refresh: a
failing refresh (the store or Metrica slow) must not let this process's claims lapse."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from metrica_bridge.service import Service
from metrica_bridge.store import open_store


class RefreshFails:
    async def refresh(self) -> None:
        raise RuntimeError("quota refresh failed")


async def test_a_failing_quota_refresh_does_not_skip_the_lease_renewal(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    renewed: list[str] = []

    class Counting:
        def renew_claims(self, owner: str, lease_s: float) -> int:
            renewed.append(owner)
            return store.renew_claims(owner, lease_s)

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

    me = SimpleNamespace(store=Counting(), settings=SimpleNamespace(ledger_retention_days=30))
    client = SimpleNamespace(governor=RefreshFails())
    pipeline = SimpleNamespace(owner="me")
    task = asyncio.create_task(Service._housekeeping(me, client, pipeline))  # type: ignore[arg-type]
    try:
        for _ in range(100):
            if renewed:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()
    assert renewed == ["me"]
