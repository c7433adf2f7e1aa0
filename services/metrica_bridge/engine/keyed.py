"""Per-key ordered execution.

Jobs with the same key run strictly one after another, in submission order; jobs with different
keys run concurrently, up to ``concurrency`` at once. This is what keeps one deal's updates in
order while thousands of other deals of the same partition proceed.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from metrica_bridge.engine.offsets import TopicPartition


@dataclass(slots=True, eq=False)
class Job:
    key: str
    tp: TopicPartition
    run: Callable[[], Coroutine[Any, Any, None]]
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class KeyedScheduler:
    def __init__(self, concurrency: int) -> None:
        self._concurrency = concurrency
        self._queues: dict[str, deque[Job]] = {}  # key -> jobs not yet started
        self._running: dict[str, Job] = {}  # key -> its started job
        self._ready: deque[str] = deque()  # keys waiting for a free slot
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._running) + sum(len(q) for q in self._queues.values())

    def submit(self, job: Job) -> None:
        queue = self._queues.get(job.key)
        if queue is None:
            queue = self._queues[job.key] = deque()
            if job.key not in self._running:
                self._ready.append(job.key)
        queue.append(job)
        self._idle.clear()
        self._fill()

    def _fill(self) -> None:
        while self._ready and len(self._running) < self._concurrency:
            self._start(self._ready.popleft())

    def _start(self, key: str) -> None:
        queue = self._queues[key]
        job = queue.popleft()
        if not queue:
            del self._queues[key]
        self._running[key] = job
        job.task = asyncio.create_task(job.run(), name=f"job:{job.tp[0]}[{job.tp[1]}]")
        job.task.add_done_callback(functools.partial(self._finished, key))

    def _finished(self, key: str, _task: asyncio.Task[None]) -> None:
        del self._running[key]
        if key in self._queues:
            self._ready.appendleft(key)  # keep the key's turn: its next job goes first
        self._fill()
        if not self._running and not self._queues:
            self._idle.set()

    def drop_queued(self, tps: set[TopicPartition]) -> int:
        """Forget jobs of these partitions that have not started (their records are handed back)."""
        dropped = 0
        for key in list(self._queues):
            queue = self._queues[key]
            kept = deque(job for job in queue if job.tp not in tps)
            dropped += len(queue) - len(kept)
            if kept:
                self._queues[key] = kept
            else:
                del self._queues[key]
                if key in self._ready:
                    self._ready.remove(key)
        if not self._running and not self._queues:
            self._idle.set()
        return dropped

    def running_tasks(self, tps: set[TopicPartition] | None = None) -> list[asyncio.Task[None]]:
        return [
            job.task
            for job in self._running.values()
            if job.task is not None and (tps is None or job.tp in tps)
        ]

    async def wait_idle(self) -> None:
        await self._idle.wait()
