"""Send one batch to Metrica and settle every record in it (its ``result``).

* accepted → each record gets the :class:`Ack`;
* permanent (400) → isolate the bad rows (the rows Metrica named, else split the batch in
  halves), send the good ones, fail the bad ones with :class:`Rejected`;
* retry budget spent → fail with the client's ``RetryExhausted`` (the events go to the DLQ);
* setup error (401/403/404) → stop sending: hold the batch, mark not ready, probe again slowly.
  Nothing is dead-lettered for a setup error: it is ours to fix, not the data's fault.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from metrica_bridge.logs import get_logger
from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.metrica.errors import MetricaError, PermanentError, SetupError
from metrica_bridge.metrics import LAST_SUCCESSFUL_UPLOAD, SETUP_ERROR, UPLOAD_RECORDS
from metrica_bridge.steps.batch import Ack, Endpoint, Pending
from metrica_bridge.store.base import Store, UploadIntent

log = get_logger("metrica_bridge.steps.send")


class Rejected(Exception):
    """Metrica refused this record as invalid data (``dlq.error.class = rejected``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Sender:
    def __init__(
        self,
        client: MetricaClient,
        store: Store,
        owner: str,
        *,
        setup_retry_s: float = 30.0,
        on_setup_error: Callable[[str | None], None] = lambda _: None,
    ) -> None:
        self._client = client
        self._store = store
        self._owner = owner
        self._setup_retry_s = setup_retry_s
        self._on_setup_error = on_setup_error

    async def __call__(self, endpoint: Endpoint, batch: list[Pending]) -> None:
        try:
            await self._send(endpoint, batch)
        except Exception as exc:
            # Whatever happened, every record gets an answer (the batcher reports them all).
            for pending in batch:
                if pending.result is None:
                    pending.result = exc

    async def _send(self, endpoint: Endpoint, batch: list[Pending]) -> None:
        while True:
            try:
                await self._upload(endpoint, batch)
            except SetupError as exc:
                SETUP_ERROR.set(1)
                self._on_setup_error(str(exc))
                log.error(
                    "Metrica refuses the token or counter; sending stopped",
                    endpoint=endpoint.value,
                    error=str(exc),
                    retry_in_s=self._setup_retry_s,
                )
                await asyncio.sleep(self._setup_retry_s)
                continue
            if SETUP_ERROR._value.get():
                SETUP_ERROR.set(0)
                self._on_setup_error(None)
            return

    async def _upload(self, endpoint: Endpoint, batch: list[Pending]) -> None:
        intent = UploadIntent(
            uuid.uuid4().hex, self._owner, endpoint.value, len(batch), datetime.now(UTC)
        )
        events = [event_id for p in batch for event_id in p.event_ids]
        await asyncio.to_thread(self._store.begin_upload, intent, events)
        try:
            result = await self._client.upload_encoded(endpoint.value, [p.encoded for p in batch])
        except MetricaError as exc:
            # Refused, or given up: either way Metrica holds none of it.
            await asyncio.to_thread(self._store.finish_upload, intent.intent_id, None)
            if isinstance(exc, PermanentError):
                await self._isolate(endpoint, batch, exc)
            elif isinstance(exc, SetupError):
                raise
            else:
                for pending in batch:
                    pending.result = exc
            return
        # Known before the outcome is recorded: a crash in between is recognised on recovery.
        await asyncio.to_thread(self._store.finish_upload, intent.intent_id, result.uploading_id)
        now = time.time()
        ack = Ack(result.uploading_id, len(batch), now)
        UPLOAD_RECORDS.labels(endpoint=endpoint.value).observe(len(batch))
        LAST_SUCCESSFUL_UPLOAD.set(now)
        for pending in batch:
            pending.result = ack

    async def _isolate(self, endpoint: Endpoint, batch: list[Pending], exc: PermanentError) -> None:
        if len(batch) == 1:
            _reject(batch[0], exc)
            return
        named = {i for i in exc.rows if 0 <= i < len(batch)}
        if named:
            bad = [p for i, p in enumerate(batch) if i in named]
            good = [p for i, p in enumerate(batch) if i not in named]
            for pending in bad:
                _reject(pending, exc)
            if good:
                await self._upload(endpoint, good)
            return
        half = len(batch) // 2
        await self._upload(endpoint, batch[:half])
        await self._upload(endpoint, batch[half:])


def _reject(pending: Pending, exc: PermanentError) -> None:
    pending.result = Rejected(f"rejected by Metrica: {exc.message}")
