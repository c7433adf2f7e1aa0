"""The lease heartbeat (engine/leases.py) runs on its own: nothing else failing (the quota
refresh used to share its ``try``, issue 16, item 10) can let this process's claims lapse, and a
failed renewal is tried again at the next beat. Real SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from metrica_bridge.engine.leases import heartbeat
from metrica_bridge.store import StoreError, open_store


async def test_the_heartbeat_renews_and_outlives_a_failed_renewal(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    store.claim_orders(["D1"], "me", 0.2)  # a short lease: lapsed unless renewed
    calls: list[int] = []

    class FailsOnce:
        def renew_claims(self, owner: str, lease_s: float) -> int:
            calls.append(len(calls))
            if len(calls) == 1:
                raise StoreError("store renew_claims failed: OperationalError")
            return store.renew_claims(owner, lease_s)

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

    task = asyncio.create_task(heartbeat(FailsOnce(), "me", every_s=0.05))  # type: ignore[arg-type]
    try:
        for _ in range(200):
            if len(calls) >= 3:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # longer than the first lease: only renewals keep it
        assert store.claim_orders(["D1"], "other", 30.0) == set()  # still ours
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()
    assert len(calls) >= 3
