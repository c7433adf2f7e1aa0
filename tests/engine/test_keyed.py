"""Per-key ordering with cross-key concurrency, a concurrency cap, and revocation."""

from __future__ import annotations

import asyncio
import random

from metrica_bridge.engine.keyed import Job, KeyedScheduler


async def test_same_key_in_order_other_keys_concurrently_within_the_cap() -> None:
    scheduler = KeyedScheduler(concurrency=4)
    rng = random.Random(3)
    seen: dict[str, list[int]] = {}
    running = 0
    peak = 0

    async def work(key: str, n: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(rng.uniform(0, 0.003))
        seen.setdefault(key, []).append(n)
        running -= 1

    for n in range(300):
        key = f"k{rng.randrange(12)}"
        scheduler.submit(Job(key, ("t", 0), lambda key=key, n=n: work(key, n)))
    await asyncio.wait_for(scheduler.wait_idle(), 10)
    assert all(values == sorted(values) for values in seen.values())
    assert sum(len(v) for v in seen.values()) == 300
    assert peak == 4  # concurrent across keys, never above the cap


async def test_drop_queued_forgets_only_unstarted_jobs_of_revoked_partitions() -> None:
    scheduler = KeyedScheduler(concurrency=1)
    gate = asyncio.Event()
    ran: list[str] = []

    async def work(name: str) -> None:
        if name == "first":
            await gate.wait()
        ran.append(name)

    scheduler.submit(Job("a", ("t", 0), lambda: work("first")))
    scheduler.submit(Job("a", ("t", 0), lambda: work("same-key-revoked")))
    scheduler.submit(Job("b", ("t", 1), lambda: work("kept")))
    await asyncio.sleep(0)
    assert scheduler.drop_queued({("t", 0)}) == 1
    assert len(scheduler.running_tasks({("t", 0)})) == 1
    gate.set()
    await asyncio.wait_for(scheduler.wait_idle(), 5)
    assert ran == ["first", "kept"]
