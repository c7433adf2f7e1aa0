"""Send one batch to Metrica and settle every record in it (its ``result``).

* accepted → each record gets the :class:`Ack`;
* refused as too large (400 ``too_much_rows``, HTTP 413) → split into requests within the
  limits, which are lowered for the rest of the process's life; never dead-lettered;
* refused as invalid (400) → isolate the bad records, send the good ones, fail the bad ones with
  :class:`Rejected`. Rows Metrica names cost one more request. Without names, bisection with a
  pool: descend into the refused half, keep the other half aside, and send everything kept aside
  together once the bad record is found: about log2(n) + 1 requests for one bad record, where
  sending both halves at every level costs 2·log2(n), and record-by-record 2n;
* every part refused the same way (every record named with one message, or without names the
  first record alone, then a second one, with the batch's own error; batches of three records
  or more), or more refusals than ``isolation_cap`` requests may find → a setup problem (the
  status map not pushed, a format the counter refuses), not the data's fault: hold;
* retry budget spent → fail with the client's ``RetryExhausted`` (the events go to the DLQ);
* setup error (401/403/404), or a hold → stop sending these records: mark not ready and probe
  again, 30 s at first, doubling up to 15 minutes (each probe is one request of the reserve).
  Nothing is dead-lettered for a setup problem: it is ours to fix, not the data's fault.

The first request of every part is paced (it waits for the daily budget's pace); retries and
probes draw on the reserve. The upload intent of a request is written once the governor has
admitted it, right before it leaves, so its time is the time the request was sent.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from metrica_bridge.logs import get_logger
from metrica_bridge.metrica.classify import TOO_LARGE_TYPES
from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.metrica.errors import MetricaError, PermanentError, SetupError
from metrica_bridge.metrics import LAST_SUCCESSFUL_UPLOAD, UPLOAD_RECORDS
from metrica_bridge.steps.batch import Ack, Endpoint, Pending, RequestLimits
from metrica_bridge.store.base import Store, StoreError, UploadIntent, order_intent_key

log = get_logger("metrica_bridge.steps.send")

SETUP_PROBE_MAX_S = 900.0
SETUP_MIN_RECORDS = 3  # a batch this large, refused the same way everywhere, is a setup problem
FINISH_RETRY_S = (0.05, 0.2, 0.5, 1.0, 2.0)  # resolving an intent: waits between attempts
_DIGITS = re.compile(r"\d+")


class Rejected(Exception):
    """Metrica refused this record as invalid data (``dlq.error.class = rejected``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SetupHold(Exception):
    """Metrica refuses these records in a way that is not theirs to fix: hold them."""

    def __init__(self, reason: str, signature: tuple[object, ...]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.signature = signature


def isolation_cap(records: int) -> int:
    """Requests one batch may spend isolating records Metrica refused without naming them:
    enough for three bad records; a fourth means something systematic."""
    return 3 * math.ceil(math.log2(max(2, records))) + 4


def signature(error: PermanentError) -> tuple[object, ...]:
    """How a refusal reads, without its numbers (row indexes, counts): two parts refused with
    the same signature were refused the same way."""
    messages = sorted({_DIGITS.sub("#", e.message) for e in error.errors} or {""})
    return (error.status, error.error_type, *messages)


class Sender:
    def __init__(
        self,
        client: MetricaClient,
        store: Store,
        owner: str,
        *,
        limits: RequestLimits | None = None,
        setup_retry_s: float = 30.0,
        on_setup_error: Callable[[str | None], None] = lambda _: None,
    ) -> None:
        self._client = client
        self._store = store
        self._owner = owner
        self.limits = limits or RequestLimits(10_000, 10_000_000)
        self._setup_retry_s = setup_retry_s
        self._on_setup_error = on_setup_error
        self._holds: dict[int, str] = {}  # batches held for a setup problem -> the reason

    async def __call__(self, endpoint: Endpoint, batch: list[Pending]) -> None:
        try:
            await self._send(endpoint, batch)
        except Exception as exc:
            # Whatever happened, every record gets an answer (the batcher reports them all).
            for pending in batch:
                if pending.result is None:
                    pending.result = exc
        finally:
            self._hold(id(batch), None)

    # -- holding for setup problems ------------------------------------------------------------
    def _hold(self, key: int, reason: str | None) -> None:
        before = next(iter(self._holds.values()), None)
        if reason is None:
            self._holds.pop(key, None)
        else:
            self._holds[key] = reason
        now = next(iter(self._holds.values()), None)
        if now != before:
            self._on_setup_error(now)

    async def _send(self, endpoint: Endpoint, batch: list[Pending]) -> None:
        probe_s = self._setup_retry_s
        known: tuple[object, ...] | None = None  # the refusal a hold waits to see end
        paced = True
        while True:
            waiting = [p for p in batch if p.result is None]
            if not waiting:
                return
            try:
                await self._deliver(endpoint, waiting, paced=paced, known=known)
            except SetupError as exc:
                reason, known = str(exc), None
                event = "Metrica refuses the token or counter; sending stopped"
            except SetupHold as exc:
                reason, known = exc.reason, exc.signature
                event = "Metrica refuses every part of a batch alike; sending stopped"
            else:
                return
            self._hold(id(batch), reason)
            log.error(
                event,
                endpoint=endpoint.value,
                records=sum(1 for p in batch if p.result is None),
                error=reason,
                retry_in_s=probe_s,
            )
            await asyncio.sleep(probe_s)
            probe_s = min(probe_s * 2, SETUP_PROBE_MAX_S)
            paced = False  # a probe: from the reserve

    # -- one part ------------------------------------------------------------------------------
    async def _deliver(
        self,
        endpoint: Endpoint,
        records: list[Pending],
        *,
        paced: bool,
        known: tuple[object, ...] | None = None,
    ) -> None:
        """Send ``records``; split what is too large, isolate what is refused."""
        failure = await self._try(endpoint, records, paced)
        if failure is None:
            return
        if failure.error_type in TOO_LARGE_TYPES and len(records) > 1:
            size = sum(p.size for p in records)
            self.limits.learn_too_large(len(records), size)
            log.warning(
                "Metrica refused a request as too large; splitting it",
                endpoint=endpoint.value,
                records=len(records),
                bytes=size,
                max_records=self.limits.records,
                max_bytes=self.limits.bytes,
            )
            for part in _split(records, self.limits):
                await self._deliver(endpoint, part, paced=paced)
            return
        if known is not None and signature(failure) == known:
            raise SetupHold(str(failure), known)  # a probe: still refused the same way
        await self._isolate(endpoint, records, failure, paced=paced)

    async def _try(
        self, endpoint: Endpoint, records: list[Pending], paced: bool
    ) -> PermanentError | None:
        """One upload. Sets every record's result unless Metrica refused the data (returned)."""
        events = [event_id for p in records for event_id in p.event_ids]
        if endpoint is Endpoint.ORDERS:
            events += [order_intent_key(p.record_id) for p in records]
        intents = _Intents(self._store, self._owner, endpoint, len(records), events)
        try:
            result = await self._client.upload_encoded(
                endpoint.value,
                [p.encoded for p in records],
                paced=paced,
                before_send=intents.before_send,
                on_unclear=intents.on_unclear,
            )
        except MetricaError as exc:
            # Refused, or given up: either way Metrica holds none of it.
            await intents.finish(None)
            if isinstance(exc, SetupError):
                raise
            if isinstance(exc, PermanentError):
                return exc
            for pending in records:
                pending.result = exc
            return None
        # Known before the outcome is recorded: a crash in between is recognised on recovery.
        # Metrica holds the batch now: a store failure here must not make its events retry
        # (the open intent is this process's own, so they would be sent again). Retried in
        # place; past that the intent stays open and the events are settled all the same:
        # the ledger, written next, is what says they were delivered.
        try:
            await intents.finish(result.uploading_id)
        except StoreError as exc:
            log.error(
                "upload accepted but its intent could not be resolved; settling it anyway",
                endpoint=endpoint.value,
                uploading_id=result.uploading_id,
                error=str(exc),
            )
        now = time.time()
        ack = Ack(result.uploading_id, len(records), now)
        UPLOAD_RECORDS.labels(endpoint=endpoint.value).observe(len(records))
        LAST_SUCCESSFUL_UPLOAD.set(now)
        for pending in records:
            pending.result = ack
        return None

    # -- isolating refused records -------------------------------------------------------------
    async def _probe(
        self,
        endpoint: Endpoint,
        probe: Pending,
        why: PermanentError,
        failure: PermanentError,
        paced: bool,
    ) -> bool:
        """Every part so far was refused alike: is it that record, or everything? One record
        not yet tried, alone: True when Metrica accepts it; refused alike, a setup problem."""
        again = await self._try(endpoint, [probe], paced)
        if again is not None and signature(again) == signature(failure) == signature(why):
            raise SetupHold(
                f"Metrica refuses every part of an upload the same way: {failure}",
                signature(failure),
            )
        if again is None:
            return True
        _reject(probe, again)
        return False

    async def _isolate(
        self, endpoint: Endpoint, batch: list[Pending], failure: PermanentError, *, paced: bool
    ) -> None:
        alike = signature(failure)
        cap, spent = isolation_cap(len(batch)), 0
        suspects, why = batch, failure  # ``suspects`` holds at least one refused record
        pool: list[Pending] = []  # neither known good nor known bad yet
        accepted = probed = False
        setup_test = len(batch) >= SETUP_MIN_RECORDS  # fewer refused alike prove nothing
        while True:
            rows = set(why.rows)
            named = [p for i, p in enumerate(suspects) if i in rows]
            if named or len(suspects) == 1:
                culprits = named or suspects
                if setup_test and len(named) == len(batch) and _uniform(why):
                    raise SetupHold(
                        f"Metrica refuses every record of an upload the same way: {failure}",
                        alike,
                    )
                if setup_test and not accepted and not probed and not named and pool:
                    probed, spent = True, spent + 1
                    accepted = await self._probe(endpoint, pool.pop(0), why, failure, paced)
                for pending in culprits:
                    _reject(pending, why)
                pool = [p for p in suspects if p not in culprits] + pool
                if not pool:
                    return
                suspects, pool = pool, []
            elif spent >= cap:
                raise SetupHold(
                    f"Metrica refuses more records of one upload than {cap} requests may "
                    f"isolate, naming none: {failure}",
                    alike,
                )
            else:
                half = len(suspects) // 2
                first, second = suspects[:half], suspects[half:]
                spent += 1
                refused = await self._try(endpoint, first, paced)
                if refused is None:
                    accepted = True
                    suspects = second  # still holds the refused record
                    continue
                pool = second + pool
                suspects, why = first, refused
                continue
            # What was kept aside goes together: one request when the batch had one bad record.
            spent += 1
            refused = await self._try(endpoint, suspects, paced)
            if refused is None:
                return
            why = refused


def _uniform(error: PermanentError) -> bool:
    """Every error of the refusal says the same thing (the location aside)."""
    return len({_DIGITS.sub("#", e.message) for e in error.errors}) <= 1


def _reject(pending: Pending, exc: PermanentError) -> None:
    pending.result = Rejected(f"rejected by Metrica: {exc.message}")


def _split(records: list[Pending], limits: RequestLimits) -> list[list[Pending]]:
    """Parts within the limits, in order; never fewer than two (the whole was too large)."""
    parts: list[list[Pending]] = []
    part: list[Pending] = []
    size = 0
    for pending in records:
        if part and (len(part) >= limits.records or size + pending.size > limits.bytes):
            parts.append(part)
            part, size = [], 0
        part.append(pending)
        size += pending.size
    parts.append(part)
    if len(parts) == 1 and len(records) > 1:
        half = len(records) // 2
        parts = [records[:half], records[half:]]
    return parts


class _Intents:
    """The upload intents of one upload's attempts: one per request that leaves, written right
    before it leaves, so a crash in between is recognised on recovery (steps/reconcile.py)."""

    def __init__(
        self, store: Store, owner: str, endpoint: Endpoint, records: int, events: list[str]
    ) -> None:
        self._store = store
        self._owner = owner
        self._endpoint = endpoint
        self._records = records
        self._events = events
        self._last: str | None = None

    async def before_send(self) -> None:
        # Again after a daily-quota refusal: that attempt reached nothing.
        await self.finish(None)
        intent = UploadIntent(
            uuid.uuid4().hex, self._owner, self._endpoint.value, self._records, datetime.now(UTC)
        )
        await asyncio.to_thread(self._store.begin_upload, intent, self._events)
        self._last = intent.intent_id

    async def on_unclear(self) -> None:
        # This attempt may have been applied under an id nobody will record: the intent stays
        # a claimant of uploads in its reach even once resolved (steps/reconcile.py).
        if self._last is None:
            return
        try:
            await asyncio.to_thread(self._store.doubt_upload, self._last)
        except StoreError as exc:
            log.warning("marking an upload in doubt failed", error=str(exc))

    async def finish(self, uploading_id: str | None) -> None:
        """The last attempt's intent resolved (``None``: Metrica holds none of it); retried in
        place on store errors (bounded, with backoff)."""
        intent_id, self._last = self._last, None
        if intent_id is None:
            return
        for delay in FINISH_RETRY_S:
            try:
                await asyncio.to_thread(self._store.finish_upload, intent_id, uploading_id)
                return
            except StoreError as exc:
                log.warning("resolving an upload intent failed; retrying", error=str(exc))
                await asyncio.sleep(delay)
        await asyncio.to_thread(self._store.finish_upload, intent_id, uploading_id)
