"""Batched store calls: one backend call serves many waiters; failures and cancellation reach
every waiter (none may hang)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from metrica_bridge.engine.loader import BatchCall, BatchLoader


async def test_loader_batches_concurrent_keys_and_dedupes_them() -> None:
    calls: list[list[str]] = []

    def fetch(keys: Sequence[str]) -> dict[str, int]:
        calls.append(list(keys))
        return {k: len(k) for k in keys if k != "missing"}

    loader: BatchLoader[str, int | None] = BatchLoader(fetch, default=None)
    results = await asyncio.gather(*(loader.load(k) for k in ["a", "bb", "a", "missing"]))
    assert results == [1, 2, 1, None]
    assert calls == [["a", "bb", "missing"]]


async def test_call_results_align_with_items_and_failures_reach_everyone() -> None:
    call: BatchCall[int, int] = BatchCall(lambda items: [i * 10 for i in items])
    assert await asyncio.gather(*(call(i) for i in range(5))) == [0, 10, 20, 30, 40]

    def broken(items: list[int]) -> list[int]:
        raise RuntimeError("store down")

    failing: BatchCall[int, int] = BatchCall(broken)
    results = await asyncio.gather(*(failing(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    # The next call works again: a failure does not wedge the batcher.
    failing._fn = lambda items: list(items)
    assert await failing(7) == 7


async def test_cancelling_the_drain_releases_every_waiter() -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(items: list[int]) -> list[int]:
        entered.set()
        release.wait(5)
        return list(items)

    call: BatchCall[int, int] = BatchCall(slow)
    first = asyncio.ensure_future(call(1))
    await asyncio.to_thread(entered.wait, 5)
    second = asyncio.ensure_future(call(2))  # queued behind the running batch
    await asyncio.sleep(0)
    assert call._task is not None
    call._task.cancel()
    done, pending = await asyncio.wait({first, second}, timeout=2)
    release.set()
    assert not pending
    for task in done:
        with pytest.raises(asyncio.CancelledError):
            task.result()
