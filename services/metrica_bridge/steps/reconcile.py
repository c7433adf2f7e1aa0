"""Crash recovery for uploads whose answer was never read.

Before a batch is sent, its *intent* (endpoint, record count, start time, the events it carries)
is written to the store; once Metrica answers, the intent is resolved. If the process dies with
a request in flight, the intent stays unresolved, and Metrica may or may not have applied it.
When one of its events comes back (redelivered after the crash), we ask Metrica the only way it
can be asked (metrica-api.md §9, §16): ``GET /last_uploadings``.

The list names no records, so a match is by count and time and must not guess. An upload is
taken as the lost one only if it is the *only* candidate and the intent the only claimant:

* a candidate is an upload the API made from JSON of a system entity (``uploading_source``
  ``API``, ``uploading_format`` ``JSON``, ``entity_type`` ``SYSTEM`` or the older name of the
  endpoint; a field the list leaves out filters nothing), that passed validation, of the
  intent's record count, that none of our resolved intents owns, listed within the intent's
  *reach*: from its start until the request could still have arrived (the retry budget plus
  one request timeout, since every retry of a request keeps its intent);
* a claimant is any other unresolved intent of that size whose reach holds a candidate. Those
  of other owners are first given time to resolve (a live process resolves its own within its
  request's retries, and its upload then becomes known);
* two candidates, or a claimant left, and it is not a match: the event is sent again (only
  SAVE/UPDATE uploads are sent, so a second identical upload is harmless, a lost one is not).
  The claimants still open are resolved as not applied with it, so that none of them is later
  credited alone with the upload they could all own.

The list is read from the end of the intent's reach backwards (``datetime_offset``, a UTC
instant like the uploads' ``datetime``), a page at a time, until it reaches the start: on a
busy counter the newest uploads of the moment may all be later than the lost one. See
docs/decisions.md, "Reconciliation and the sandbox's strictness" and "Reconciler proof and the
registry off the loop".
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from metrica_bridge.logs import get_logger
from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.store.base import Store, UploadIntent

log = get_logger("metrica_bridge.steps.reconcile")

SKEW = timedelta(seconds=2)  # clock difference between us and Metrica, and second rounding
RETRY_BUDGET_S = 300.0  # the defaults of Settings.retry_budget_s and metrica_timeout_s
TIMEOUT_S = 30.0
SETTLE = timedelta(seconds=60)  # how long other processes' open intents are given to resolve
PAGE = 1000  # uploads per last_uploadings request (the API's maximum)
MAX_PAGES = 10  # requests (from the reserve) one resolution may spend paging back

# entity_type of contacts and orders: SYSTEM now, CONTACT|ORDER on older pages (metrica-api §9).
_ENTITY = {"contacts": {"SYSTEM", "CONTACT"}, "orders": {"SYSTEM", "ORDER"}}


def parse_uploading_time(value: str, zone: ZoneInfo) -> datetime | None:
    """``2025-03-02T08:00:01Z`` (UTC) or ``2025-03-02 11:00:01`` (counter time)."""
    try:
        if "T" in value:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone)
    except ValueError:
        return None


def made_like_ours(upload: Mapping[str, object], endpoint: str) -> bool:
    """Could this listed upload be one the service sent to ``endpoint``? The service uploads
    JSON through the API; the list says so in ``uploading_source`` and ``uploading_format``,
    and the kind of entity in ``entity_type``. A field left out filters nothing."""

    def field(*names: str) -> str | None:
        for name in names:
            value = upload.get(name)
            if value is not None:
                return str(value).upper()
        return None

    source = field("uploading_source", "source")
    fmt = field("uploading_format", "format")
    entity = field("entity_type")
    return (
        (source is None or source == "API")
        and (fmt is None or fmt == "JSON")
        and (entity is None or entity in _ENTITY.get(endpoint, {"SYSTEM"}))
    )


class Reconciler:
    def __init__(
        self,
        store: Store,
        client: MetricaClient,
        zone: ZoneInfo,
        *,
        page: int = PAGE,
        retry_budget_s: float = RETRY_BUDGET_S,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self._store = store
        self._client = client
        self._zone = zone
        self._page = page
        # How long after its intent began a request can still reach Metrica: every retry of
        # it keeps the intent, the last one may start at the end of the budget and take a
        # whole timeout.
        self._reach = timedelta(seconds=retry_budget_s + timeout_s)
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

    @property
    def reach(self) -> timedelta:
        """How long after an intent began its upload may still arrive in Metrica."""
        return self._reach

    def _reaches(self, intent: UploadIntent, when: datetime) -> bool:
        return intent.started_at - SKEW <= when <= intent.started_at + self._reach

    async def _resolve(self, intent: UploadIntent) -> str | None:
        since, until = intent.started_at - SKEW, intent.started_at + self._reach
        deadline = datetime.now(UTC) + SETTLE
        while True:
            # Uploads first, then our own records of them: every upload in the list had its
            # intent written before it was sent, so reading the intents afterwards finds it
            # either still open (a claimant) or resolved (known) — never unaccounted for.
            uploads = await self._listed(since, until + SKEW)
            # Any intent whose reach holds the window: one begun a whole reach earlier.
            still_open = await asyncio.to_thread(
                self._store.open_intents, since - self._reach, until + SKEW
            )
            if all(o.intent_id != intent.intent_id or o.resolved for o in still_open):
                # Resolved since it was read (another process settled it; a known upload
                # stays known): not ours to credit now, send again.
                return None
            claimants = [
                other
                for other in still_open
                if other.records == intent.records and other.intent_id != intent.intent_id
            ]
            known = await asyncio.to_thread(self._store.known_uploads, since - self._reach)
            candidates = self._candidates(intent, uploads, known)
            contenders = [
                c for c in claimants if any(self._reaches(c, when) for when, _ in candidates)
            ]
            # A resolved claimant (in doubt) will not change: only open ones are waited for.
            waiting = any(c.owner != intent.owner and not c.resolved for c in contenders)
            if not waiting or datetime.now(UTC) >= deadline:
                break
            await asyncio.sleep(2.0)  # a live process resolves its intent; its upload is known
        ambiguous = len(candidates) > 1 or bool(contenders)
        match = candidates[0][1] if len(candidates) == 1 and not contenders else None
        await asyncio.to_thread(self._store.finish_upload, intent.intent_id, match)
        for contender in contenders:  # they could all own it: none of them is credited later
            if contender.resolved:
                continue  # in doubt, settled already: what it was credited stays
            await asyncio.to_thread(self._store.finish_upload, contender.intent_id, None)
            self._verdicts[contender.intent_id] = None
        log.info(
            "in-flight upload of a previous run reconciled",
            intent=intent.intent_id,
            endpoint=intent.endpoint,
            records=intent.records,
            applied=match is not None,
            ambiguous=ambiguous,
            candidates=len(candidates),
            contenders=len(contenders),
        )
        return match

    def _candidates(
        self, intent: UploadIntent, uploads: list[dict[str, object]], known: set[str]
    ) -> list[tuple[datetime, str]]:
        """Uploads that may be the intent's: not credited to another intent, of its size, made
        the way ours are, applied, and listed within its reach."""
        since, until = intent.started_at - SKEW, intent.started_at + self._reach
        candidates: list[tuple[datetime, str]] = []
        for upload in uploads:
            uploading_id = str(upload.get("uploading_id", ""))
            when = parse_uploading_time(str(upload.get("datetime", "")), self._zone)
            if (
                not uploading_id
                or uploading_id in known
                or when is None
                or upload.get("elements_count") != intent.records
                or upload.get("api_validation_status", "PASSED") != "PASSED"
                or not made_like_ours(upload, intent.endpoint)
                or not since <= when <= until
            ):
                continue
            candidates.append((when, uploading_id))
        return candidates

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
