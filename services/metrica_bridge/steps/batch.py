"""The batcher: records for one endpoint are gathered and flushed on count, bytes or linger, at
the pace of the daily budget.

Linger is a deadline per *event*, not per batch: a record carries the time by which its event
should be on its way (consumed-at + linger). A lead's order record, submitted only after its
contact was acknowledged, is already due and leaves with the next flush instead of waiting a
second linger.

A due batch leaves at once only while no upload of its endpoint is in flight; otherwise it keeps
filling until that upload returns (Nagle's rule). Under a backlog every record is overdue, and
without this rule each would leave alone; with it, uploads grow to whatever accumulated during
the previous round trip. A full batch (``max_records`` or ``max_bytes``) leaves while fewer than
``max_in_flight`` uploads of its endpoint are out.

The pace of the daily budget (``pace_delay``, from the quota governor) is a ceiling, not a
delay: a batch ready to leave is held while the pace says the next request is not due yet, and
it keeps growing meanwhile. Once the pace has held an endpoint, its uploads are cut at the
largest request Metrica accepts (:class:`RequestLimits`, lowered when Metrica refuses a request
as too large) instead of ``max_records``/``max_bytes``, until its backlog is gone: the catch-up
after a quota wait leaves in full batches. While the budget is ample the pace is never in the
way and batches stay at ``max_records``.

One id appears at most once per upload (Metrica applies same-id rows in random order): a contact
submitted again while its previous version waits is replaced by the newer one (identities only
grow, so the newer record is a superset); an order id already waiting goes to the next upload.

Each record is encoded to JSON once, when it is submitted: that gives its size for the byte
limit, and the upload body is those bytes joined.

Nobody awaits a record: when an upload is settled, ``on_settled`` gets its records, each with
its ``result`` (the :class:`Ack`, or the exception that failed it) and its ``waiters``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Endpoint(StrEnum):
    CONTACTS = "contacts"
    ORDERS = "orders"


@dataclass(frozen=True, slots=True)
class Ack:
    """Metrica accepted the upload that carried this record."""

    uploading_id: str
    records: int
    acked_at: float  # unix time


@dataclass(slots=True, eq=False)
class Pending:
    record_id: str
    record: dict[str, Any]
    encoded: bytes  # the record as JSON, as it goes into the upload body
    deadline: float  # monotonic time
    waiters: list[Any] = field(default_factory=list)  # whoever is told when it is settled
    event_ids: list[str] = field(default_factory=list)  # the events this record completes
    result: Ack | Exception | None = None

    @property
    def size(self) -> int:
        return len(self.encoded) + 1  # and its comma


@dataclass(slots=True)
class RequestLimits:
    """The largest request Metrica accepts: undocumented for JSON uploads (metrica-api.md §6,
    docs/decisions.md), so configured, and lowered for the rest of the process's life when
    Metrica refuses a request as too large."""

    records: int
    bytes: int

    def learn_too_large(self, records: int, size: int) -> None:
        """A request of ``records`` records and ``size`` bytes was refused as too large."""
        if records > 1:
            self.records = max(1, min(self.records, records // 2))
        self.bytes = max(1, min(self.bytes, size // 2))


SendFn = Callable[["Endpoint", list[Pending]], Coroutine[Any, Any, None]]
"""Sends one batch and sets the ``result`` of every Pending it was given."""

SettledFn = Callable[["Endpoint", list[Pending]], None]

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode(record: dict[str, Any]) -> bytes:
    return _ENCODER.encode(record).encode()


class Batcher:
    def __init__(
        self,
        send: SendFn,
        *,
        on_settled: SettledFn,
        max_records: int,
        max_bytes: int,
        linger_s: float,
        limits: RequestLimits | None = None,
        pace_delay: Callable[[], float] = lambda: 0.0,
        max_in_flight: int = 2,
    ) -> None:
        self._send = send
        self._on_settled = on_settled
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._linger_s = linger_s
        self.limits = limits or RequestLimits(max_records, max_bytes)
        self._pace_delay = pace_delay
        self._open: dict[Endpoint, dict[str, Pending]] = {e: {} for e in Endpoint}
        self._bytes: dict[Endpoint, int] = dict.fromkeys(Endpoint, 0)
        self._earliest: dict[Endpoint, float] = dict.fromkeys(Endpoint, float("inf"))
        self._overflow: dict[Endpoint, list[Pending]] = {e: [] for e in Endpoint}
        self._wake: dict[Endpoint, asyncio.Event] = {e: asyncio.Event() for e in Endpoint}
        self._sending: set[asyncio.Task[None]] = set()
        self._in_flight: dict[Endpoint, int] = dict.fromkeys(Endpoint, 0)
        self._max_in_flight = max_in_flight
        self._flush_now = False
        # Held by the pace since the endpoint last caught up: cut at the request limits, not
        # at max_records, until the backlog is gone.
        self._pressed: dict[Endpoint, bool] = dict.fromkeys(Endpoint, False)
        self._tasks = [asyncio.create_task(self._run(e), name=f"batcher:{e}") for e in Endpoint]

    def deadline(self, consumed_at: float | None = None) -> float:
        start = time.monotonic() if consumed_at is None else consumed_at
        return start + self._linger_s

    def submit(
        self,
        endpoint: Endpoint,
        record_id: str,
        record: dict[str, Any],
        deadline: float,
        waiter: Any,
        event_id: str | None = None,
        encoded: bytes | None = None,
    ) -> Pending:
        """Queue a record (``encoded``: its JSON, when the caller has it already); returns the
        Pending that now carries ``waiter`` (for a contact already waiting, the one it was
        merged into: more waiters may join it)."""
        pending = Pending(
            record_id,
            record,
            encode(record) if encoded is None else encoded,
            deadline,
            [waiter],
            [event_id] if event_id else [],
        )
        return self._add(endpoint, pending)

    def resubmit(
        self, endpoint: Endpoint, pending: Pending, record: dict[str, Any], encoded: bytes
    ) -> Pending:
        """Queue ``pending`` again, now carrying ``record``, for the same waiters and events."""
        again = Pending(
            pending.record_id,
            record,
            encoded,
            pending.deadline,
            list(pending.waiters),
            list(pending.event_ids),
        )
        return self._add(endpoint, again)

    def _add(self, endpoint: Endpoint, pending: Pending) -> Pending:
        batch = self._open[endpoint]
        waiting = batch.get(pending.record_id)
        if waiting is not None and endpoint is Endpoint.CONTACTS:
            waiting.waiters.extend(pending.waiters)
            waiting.event_ids.extend(pending.event_ids)
            self._bytes[endpoint] += pending.size - waiting.size
            waiting.record, waiting.encoded = pending.record, pending.encoded
            waiting.deadline = min(waiting.deadline, pending.deadline)
            pending = waiting
        elif waiting is not None:
            self._overflow[endpoint].append(pending)
        else:
            batch[pending.record_id] = pending
            self._bytes[endpoint] += pending.size
        if pending.deadline < self._earliest[endpoint]:
            self._earliest[endpoint] = pending.deadline
        self._wake[endpoint].set()
        return pending

    def flush_soon(self) -> None:
        """Send whatever waits without lingering (revocation, shutdown)."""
        self._flush_now = True
        for event in self._wake.values():
            event.set()

    def waiting(self) -> int:
        return sum(len(b) + len(self._overflow[e]) for e, b in self._open.items())

    async def _run(self, endpoint: Endpoint) -> None:
        wake = self._wake[endpoint]
        while True:
            batch = self._open[endpoint]
            if not batch:
                self._flush_now = self._flush_now and self.waiting() > 0
                wake.clear()
                await wake.wait()
                continue
            full = len(batch) >= self._max_records or self._bytes[endpoint] >= self._max_bytes
            in_flight = self._in_flight[endpoint]
            delay = self._earliest[endpoint] - time.monotonic()
            due = (delay <= 0 or self._flush_now) and in_flight == 0
            timeout: float | None = delay if delay > 0 and in_flight == 0 else None
            if (full and in_flight < self._max_in_flight) or due:
                hold = 0.0 if self._flush_now else self._pace_delay()
                if hold <= 0:
                    self._cut(endpoint)
                    continue
                self._pressed[endpoint] = True
                timeout = hold  # the batch grows while the pace holds it
            wake.clear()  # woken by a new record or a finished upload
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=timeout)

    def _cut(self, endpoint: Endpoint) -> None:
        batch = self._open[endpoint]
        most, largest = self.limits.records, self.limits.bytes
        if not self._pressed[endpoint]:
            most, largest = min(most, self._max_records), min(largest, self._max_bytes)
        records: list[Pending] = []
        size = 0
        for record_id in list(batch):
            pending = batch[record_id]
            if records and (len(records) >= most or size + pending.size > largest):
                break
            records.append(batch.pop(record_id))
            size += pending.size
        self._bytes[endpoint] -= size
        self._pressed[endpoint] = self._pressed[endpoint] and bool(batch)
        self._earliest[endpoint] = min((p.deadline for p in batch.values()), default=float("inf"))
        overflow, self._overflow[endpoint] = self._overflow[endpoint], []
        for pending in overflow:
            self._add(endpoint, pending)
        self._in_flight[endpoint] += 1
        task = asyncio.create_task(self._send(endpoint, records), name=f"send:{endpoint}")
        self._sending.add(task)
        task.add_done_callback(functools.partial(self._sent, endpoint, records))

    def _sent(self, endpoint: Endpoint, records: list[Pending], task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._in_flight[endpoint] -= 1
        self._wake[endpoint].set()
        if task.cancelled():
            return  # abandoned at shutdown: nobody is left to tell
        error = task.exception()
        failure = error if isinstance(error, Exception) else None
        for pending in records:
            if pending.result is None:
                pending.result = failure or RuntimeError("the upload ended without an answer")
        self._on_settled(endpoint, records)

    async def close(self) -> None:
        """Stop at once. Uploads still out (retrying through an outage) are abandoned: their
        events were not marked handled, so they are consumed again after a restart, and an
        upload that did reach Metrica is recognised then by its intent."""
        for task in [*self._tasks, *self._sending]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._sending, return_exceptions=True)
