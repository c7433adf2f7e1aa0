"""Crash recovery for uploads whose answer was never read.

Before a batch is sent, its *intent* (endpoint, record count, start time, the events it carries)
is written to the store; once Metrica answers, the intent is resolved. If the process dies with
a request in flight, the intent stays unresolved, and Metrica may or may not have applied it.
When one of its events comes back (redelivered after the crash), we ask Metrica the only way it
can be asked (metrica-api.md §9, §16): ``GET /last_uploadings``. An upload since the intent
started, with the same number of records, that none of our known intents owns, is taken as the
lost one; the event is then recorded as delivered without being sent a second time. No such
upload means it never arrived, and the event is sent normally.

The match is by count and time (the list names no records), so it is a heuristic; the rule
"closest upload in time, never one already matched" keeps a few simultaneous crashes apart.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from metrica_bridge.logs import get_logger
from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.store.base import Store, UploadIntent

log = get_logger("metrica_bridge.steps.reconcile")

SKEW = timedelta(seconds=5)  # clock difference between us and Metrica, and second rounding
WINDOW = timedelta(minutes=10)  # an upload this long after its intent started is not it


def parse_uploading_time(value: str, zone: ZoneInfo) -> datetime | None:
    """``2025-03-02T08:00:01Z`` (UTC) or ``2025-03-02 11:00:01`` (counter time)."""
    try:
        if "T" in value:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone)
    except ValueError:
        return None


class Reconciler:
    def __init__(self, store: Store, client: MetricaClient, zone: ZoneInfo) -> None:
        self._store = store
        self._client = client
        self._zone = zone
        self._lock = asyncio.Lock()
        self._verdicts: dict[str, str | None] = {}

    async def applied(self, intent: UploadIntent) -> str | None:
        """Metrica's uploading id if the intent's upload was applied, else None."""
        if intent.resolved:
            return intent.uploading_id
        async with self._lock:  # one at a time, so two intents never take the same upload
            if intent.intent_id not in self._verdicts:
                self._verdicts[intent.intent_id] = await self._resolve(intent)
            return self._verdicts[intent.intent_id]

    async def _resolve(self, intent: UploadIntent) -> str | None:
        since = intent.started_at - SKEW
        known = await asyncio.to_thread(self._store.known_uploads, since - WINDOW)
        uploads = await self._client.last_uploadings(limit=1000)
        candidates: list[tuple[timedelta, str]] = []
        for upload in uploads:
            uploading_id = str(upload.get("uploading_id", ""))
            when = parse_uploading_time(str(upload.get("datetime", "")), self._zone)
            if (
                not uploading_id
                or uploading_id in known
                or when is None
                or upload.get("elements_count") != intent.records
                or upload.get("api_validation_status", "PASSED") != "PASSED"
                or not since <= when <= intent.started_at + WINDOW
            ):
                continue
            candidates.append((abs(when - intent.started_at), uploading_id))
        match = min(candidates)[1] if candidates else None
        await asyncio.to_thread(self._store.finish_upload, intent.intent_id, match)
        log.info(
            "in-flight upload of a previous run reconciled",
            intent=intent.intent_id,
            endpoint=intent.endpoint,
            records=intent.records,
            applied=match is not None,
        )
        return match
