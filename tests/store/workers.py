"""Process entry points for the multi-process tests (importable by ``spawn`` children)."""

from __future__ import annotations

from typing import Any

from metrica_bridge.store import open_store


def claim_in_process(url: str, owner: str, deals: list[str], ready: Any, go: Any, out: Any) -> None:
    """Open a store, wait for the starting signal, claim in small batches, report the wins."""
    store = open_store(url, migrate=False)
    try:
        ready.release()
        go.wait()
        won: set[str] = set()
        # several calls, so the processes interleave rather than one taking everything at once
        for i in range(0, len(deals), 10):
            won |= store.claim_orders(deals[i : i + 10], owner, lease_s=60)
        out.put((owner, sorted(won)))
    finally:
        store.close()
