"""Crash recovery for uploads whose answer was never read.

Before a batch is sent, its *intent* (endpoint, record count, start time, the events it carries)
is written to the store; once Metrica answers, the intent is resolved. If the process dies with
a request in flight, the intent stays unresolved, and Metrica may or may not have applied it.
When one of its events comes back (redelivered after the crash), we ask Metrica the only way it
can be asked (metrica-api.md §9, §16): ``GET /last_uploadings``. An upload since the intent
started, with the same number of records, that none of our known intents owns, is taken as the
lost one; the event is then recorded as delivered without being sent a second time. No such
upload means it never arrived, and the event is sent normally.

The match is by count and time (the list names no records), so it must not guess. An upload
is taken only if no other process could be waiting for it: intents of other owners that are
still open and could have sent it are first given time to resolve (a live process resolves its
own within its request's retries); one still open after that makes the upload ambiguous, and
the event is sent again — a second identical update is harmless, a lost one is not. Among one
crashed run's own open intents of the same size, uploads are paired in time order (requests
leave in the order their intents were written), never one already matched.

The list is read from the end of the intent's window backwards (``datetime_offset``, a UTC
instant like the uploads' ``datetime``), a page at a time, until it reaches the window's start:
on a busy counter the newest uploads of the moment may all be later than the lost one. The
list names neither records nor the endpoint (``entity_type`` is ``SYSTEM`` for contacts and
orders alike), so a match proves an upload of that size at that time, no more: see
docs/decisions.md, "Reconciliation and the sandbox's strictness".
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from metrica_bridge.logs import get_logger
from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.store.base import Store, UploadIntent

log = get_logger("metrica_bridge.steps.reconcile")

SKEW = timedelta(seconds=2)  # clock difference between us and Metrica, and second rounding
WINDOW = timedelta(seconds=60)  # how long after its intent began a request can still arrive
SETTLE = timedelta(seconds=60)  # how long other processes' open intents are given to resolve
PAGE = 1000  # uploads per last_uploadings request (the API's maximum)
MAX_PAGES = 10  # requests (from the reserve) one resolution may spend paging back


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
    def __init__(
        self, store: Store, client: MetricaClient, zone: ZoneInfo, *, page: int = PAGE
    ) -> None:
        self._store = store
        self._client = client
        self._zone = zone
        self._page = page
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
        since, until = intent.started_at - SKEW, intent.started_at + WINDOW
        deadline = datetime.now(UTC) + SETTLE
        while True:
            # Uploads first, then our own records of them: every upload in the list had its
            # intent written before it was sent, so reading the intents afterwards finds it
            # either still open (a rival) or resolved (known) — never unaccounted for.
            uploads = await self._listed(since, until + SKEW)
            same_size = [
                other
                for other in await asyncio.to_thread(
                    self._store.open_intents, since - WINDOW, until + SKEW
                )
                if other.records == intent.records
            ]
            rivals = [o for o in same_size if o.owner != intent.owner]
            siblings = [o.intent_id for o in same_size if o.owner == intent.owner]
            known = await asyncio.to_thread(self._store.known_uploads, since - WINDOW)
            candidates: list[tuple[datetime, str]] = []
            ambiguous = False
            for upload in uploads:
                uploading_id = str(upload.get("uploading_id", ""))
                when = parse_uploading_time(str(upload.get("datetime", "")), self._zone)
                if (
                    not uploading_id
                    or uploading_id in known
                    or when is None
                    or upload.get("elements_count") != intent.records
                    or upload.get("api_validation_status", "PASSED") != "PASSED"
                    or not since <= when <= until
                ):
                    continue
                if any(r.started_at - SKEW <= when <= r.started_at + WINDOW for r in rivals):
                    ambiguous = True  # another process may own it: never take it from them
                    continue
                candidates.append((when, uploading_id))
            if not ambiguous or datetime.now(UTC) >= deadline:
                break
            await asyncio.sleep(2.0)  # a live rival resolves its intent; its upload becomes known
        rank = siblings.index(intent.intent_id) if intent.intent_id in siblings else 0
        ordered = sorted(candidates)
        match = ordered[rank][1] if rank < len(ordered) and not ambiguous else None
        await asyncio.to_thread(self._store.finish_upload, intent.intent_id, match)
        log.info(
            "in-flight upload of a previous run reconciled",
            intent=intent.intent_id,
            endpoint=intent.endpoint,
            records=intent.records,
            applied=match is not None,
            ambiguous=ambiguous,
        )
        return match

    async def _listed(self, since: datetime, until: datetime) -> list[dict[str, object]]:
        """Uploads listed strictly before ``until`` back to ``since`` (or ``MAX_PAGES``)."""
        offset = until.replace(microsecond=0) + timedelta(seconds=1)  # to the second
        found: dict[str, dict[str, object]] = {}
        for _ in range(MAX_PAGES):
            page = await self._client.last_uploadings(datetime_offset=offset, limit=self._page)
            fresh = [u for u in page if str(u.get("uploading_id", "")) not in found]
            for upload in fresh:
                found[str(upload.get("uploading_id", ""))] = upload
            times = [parse_uploading_time(str(u.get("datetime", "")), self._zone) for u in page]
            known = [t for t in times if t is not None]
            if len(page) < self._page or not fresh or not known or min(known) < since:
                break
            # The list is to the second. Read the oldest second again (the page may have cut it
            # in two; uploads seen are skipped by id), unless the page is that second alone.
            oldest, newest = min(known).replace(microsecond=0), max(known).replace(microsecond=0)
            offset = oldest if oldest == newest else oldest + timedelta(seconds=1)
        return list(found.values())
