"""Batched calls: many coroutines ask for one key each, the backend sees one call for all.

The store is reached through a thread (its drivers block), and one round trip per event would
cap the pipeline far below the broker. A :class:`BatchLoader` gathers the keys requested while the
previous call is in flight (or within the current loop tick) and resolves every waiter from one
call: group commit for reads, the DataLoader pattern.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
A = TypeVar("A")
R = TypeVar("R")


class BatchLoader(Generic[K, V]):
    def __init__(
        self, fetch: Callable[[Sequence[K]], Mapping[K, V]], default: V, max_batch: int = 2_000
    ) -> None:
        self._fetch = fetch
        self._default = default
        self._max_batch = max_batch
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._running = False
        self._task: asyncio.Task[None] | None = None

    async def load(self, key: K) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if not self._running:
            self._running = True
            asyncio.get_running_loop().call_soon(self._spawn)
        return await future

    def _spawn(self) -> None:
        self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._waiting:
                keys = list(self._waiting)[: self._max_batch]
                waiters = {key: self._waiting.pop(key) for key in keys}
                try:
                    found = await asyncio.to_thread(self._fetch, keys)
                except BaseException as exc:  # every waiter learns about the failure
                    for futures in [*waiters.values(), *self._waiting.values()]:
                        _fail(futures, exc)
                    if not isinstance(exc, Exception):
                        self._waiting.clear()
                        raise
                    continue
                for key, futures in waiters.items():
                    value = found.get(key, self._default)
                    for f in futures:
                        if not f.done():
                            f.set_result(value)
        finally:
            self._running = False


class BatchCall(Generic[A, R]):
    """Group commit: ``await call(item)`` returns that item's result once a backend call
    carrying it has succeeded. ``fn`` maps a list of items to a list of results, aligned."""

    def __init__(self, fn: Callable[[list[A]], Sequence[R]], max_batch: int = 5_000) -> None:
        self._fn = fn
        self._max_batch = max_batch
        self._pending: list[tuple[A, asyncio.Future[R]]] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: A) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().call_soon(self._spawn)
        return await future

    def _spawn(self) -> None:
        self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    results = await asyncio.to_thread(self._fn, [item for item, _ in batch])
                except BaseException as exc:
                    # Cancelled (shutdown) or failed: nobody may wait for ever on a lost batch.
                    _fail([f for _, f in batch], exc)
                    if not isinstance(exc, Exception):
                        _fail([f for _, f in self._pending], exc)
                        self._pending.clear()
                        raise
                    continue
                for (_, f), result in zip(batch, results, strict=True):
                    if not f.done():
                        f.set_result(result)
        finally:
            self._running = False


def _fail(futures: list[asyncio.Future[Any]], exc: BaseException) -> None:
    error = exc if isinstance(exc, Exception) else asyncio.CancelledError()
    for future in futures:
        if not future.done():
            if isinstance(error, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(error)
