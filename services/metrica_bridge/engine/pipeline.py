"""One event through the steps: decode → validate → dedupe → enrich → map → batch → send → record.

``Pipeline.handle`` never raises for a bad event: every event ends with exactly one recorded
outcome (delivered, skipped, stale, duplicate, parked, dead-lettered). Only infrastructure
failures (the store or the broker unreachable) escape, and then the event is not marked handled,
so it is consumed again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from metrica_bridge.codec import Codec, DecodeError, SchemaUnavailable
from metrica_bridge.engine.loader import BatchCall, BatchLoader
from metrica_bridge.events import (
    DealStatusChanged,
    Event,
    EventKind,
    InvalidEvent,
    LeadCreated,
    PaymentReceived,
    expected_kind,
    parse_event,
)
from metrica_bridge.logs import get_logger
from metrica_bridge.metrica.errors import RetryExhausted
from metrica_bridge.metrica.status_map import StatusMap
from metrica_bridge.metrics import (
    END_TO_END_LATENCY,
    EVENTS_PROCESSED,
    IDENTIFIERS_DROPPED,
    ORDERS_OUTSIDE_WINDOW,
    ErrorClass,
    Outcome,
)
from metrica_bridge.steps import enrich
from metrica_bridge.steps import map as mapping
from metrica_bridge.steps.batch import Ack, Batcher, Endpoint
from metrica_bridge.steps.dedupe import Dedupe
from metrica_bridge.steps.dlq import DeadLetters, SourceRecord, is_replay
from metrica_bridge.steps.reconcile import Reconciler
from metrica_bridge.steps.record import Recorder
from metrica_bridge.steps.send import Rejected
from metrica_bridge.store.base import (
    Changes,
    Identity,
    IdentityUpdate,
    LedgerEntry,
    OrderState,
    ParkedEvent,
    Store,
    StoreError,
    UploadIntent,
)

log = get_logger("metrica_bridge.engine.pipeline")

CLAIM_LEASE_S = 30.0  # renewed every LEASE_RENEW_S while held; a crashed owner's lapse
LEASE_RENEW_S = 5.0
UPLOADED_CACHE = 50_000


@dataclass(frozen=True, slots=True)
class Parsed:
    """A record that decoded and validated, ready for its per-key worker."""

    source: SourceRecord
    event: Event
    consumed_at: float  # monotonic, for the linger deadline
    released: bool = False  # taken out of the park by the sweeper


class Pipeline:
    def __init__(
        self,
        *,
        store: Store,
        codec: Codec,
        statuses: StatusMap,
        batcher: Batcher,
        dead_letters: DeadLetters,
        timezone: str,
        topics: dict[EventKind, str],
        hash_identifiers: bool = False,
        owner: str | None = None,
        reconciler: Reconciler | None = None,
    ) -> None:
        self.store = store
        self.codec = codec
        self.statuses = statuses
        self.batcher = batcher
        self.dead_letters = dead_letters
        self.zone = ZoneInfo(timezone)
        self.kinds = {topic: kind for kind, topic in topics.items()}
        self.hash_identifiers = hash_identifiers
        self.owner = owner or f"mb-{uuid.uuid4().hex[:12]}"
        self.reconciler = reconciler
        self.recorder = Recorder(store)
        self.dedupe = Dedupe(store)
        self._identities: BatchLoader[str, Identity | None] = BatchLoader(
            store.identities, default=None
        )
        self._merge: BatchCall[IdentityUpdate, Identity] = BatchCall(self._merge_batch)
        self._orders: BatchLoader[str, OrderState | None] = BatchLoader(store.orders, default=None)
        self._parked: BatchLoader[str, bool] = BatchLoader(self._parked_batch, default=False)
        self._claim: BatchCall[str, bool] = BatchCall(self._claim_batch)
        self._inflight: BatchLoader[str, UploadIntent | None] = BatchLoader(
            store.inflight, default=None
        )
        # client -> fingerprint Metrica holds, for contacts acknowledged but not yet in the store
        # (two leads of one client in flight at once); bounded, the store is the truth.
        self._uploaded: OrderedDict[str, str] = OrderedDict()

    # -- store calls, batched ----------------------------------------------------------------
    def _merge_batch(self, updates: list[IdentityUpdate]) -> list[Identity]:
        merged = self.store.merge_identities(updates)
        return [merged[u.client_uniq_id] for u in updates]

    def _parked_batch(self, deal_ids: Sequence[str]) -> dict[str, bool]:
        return dict.fromkeys(self.store.parked_deals(deal_ids), True)

    def _claim_batch(self, deal_ids: list[str]) -> list[bool]:
        unique = list(dict.fromkeys(deal_ids))
        claimed = self.store.claim_orders(unique, self.owner, CLAIM_LEASE_S)
        result = []
        for deal in deal_ids:  # the same deal twice in one call: only the first gets it
            result.append(deal in claimed)
            claimed.discard(deal)
        return result

    # -- entry points ------------------------------------------------------------------------
    def parse(self, source: SourceRecord) -> Parsed | tuple[ErrorClass, str]:
        """Decode and validate; a bad record is returned (for the DLQ), never raised.

        Raises :class:`SchemaUnavailable` when the Schema Registry cannot be asked right now:
        that is our outage, not the record's fault, so it is retried, not dead-lettered."""
        try:
            decoded = self.codec.decode(source.value)
        except SchemaUnavailable:
            raise
        except DecodeError as exc:
            return ErrorClass.DECODE_ERROR, exc.reason
        try:
            event = parse_event(decoded.schema_name, decoded.record)
            expected_kind(event, self.kinds[source.topic])
        except InvalidEvent as exc:
            return ErrorClass.INVALID_EVENT, exc.reason
        key = source.key.decode("utf-8", "replace") if source.key is not None else None
        if key is not None and key != event.key:
            return ErrorClass.INVALID_EVENT, "record key does not match the event's entity id"
        if isinstance(event, LeadCreated) and event.dropped_identifiers:
            IDENTIFIERS_DROPPED.labels(topic=source.topic).inc(event.dropped_identifiers)
        return Parsed(source, event, time.monotonic())

    async def dead_letter(
        self,
        source: SourceRecord,
        error_class: ErrorClass,
        reason: str,
        event_id: str | None,
        *,
        released: bool = False,
    ) -> None:
        # A record without a readable event id is recorded by its position, so a redelivery
        # after a crash does not dead-letter it a second time.
        ledger_id = event_id or f"@{source.topic}:{source.partition}:{source.offset}"
        if event_id is None and await self.dedupe.seen(ledger_id) is not None:
            EVENTS_PROCESSED.labels(topic=source.topic, outcome=Outcome.DUPLICATE).inc()
            return
        await self.dead_letters.send(source, error_class, reason)
        log.warning(
            "dead-lettered",
            topic=source.topic,
            partition=source.partition,
            offset=source.offset,
            event_id=event_id,
            error_class=error_class.value,
            reason=reason,
        )
        entry = LedgerEntry(ledger_id, source.topic, Outcome.DEAD_LETTERED, error_class.value)
        await self._record(Changes(ledger=[entry], unpark=[ledger_id] if released else []))

    async def handle(self, parsed: Parsed) -> None:
        event, source = parsed.event, parsed.source
        previous = await self.dedupe.seen(event.event_id)
        # A DLQ replay is the one way back for a dead-lettered event; anything else seen before
        # (a redelivery, a CRM retry) is a duplicate.
        replay = previous == Outcome.DEAD_LETTERED and is_replay(source)
        # A parked event leaving the park is that same event, not a duplicate of itself.
        resumed = previous == Outcome.PARKED and parsed.released
        if previous is not None and not (replay or resumed):
            if parsed.released:  # handled already: leave the park (or be leased forever)
                await self._record(Changes(unpark=[event.event_id]))
            EVENTS_PROCESSED.labels(topic=source.topic, outcome=Outcome.DUPLICATE).inc()
            log.debug(
                "duplicate",
                event_id=event.event_id,
                topic=source.topic,
                partition=source.partition,
                offset=source.offset,
                previous=previous,
            )
            return
        deadline = self.batcher.deadline(parsed.consumed_at)
        try:
            if isinstance(event, LeadCreated):
                await self._lead(parsed, event, deadline)
            else:
                await self._order_event(parsed, event, deadline)
        except Rejected as exc:
            await self.dead_letter(
                source, ErrorClass.REJECTED, exc.reason, event.event_id, released=parsed.released
            )
        except RetryExhausted as exc:
            await self.dead_letter(
                source,
                ErrorClass.RETRY_EXHAUSTED,
                str(exc),
                event.event_id,
                released=parsed.released,
            )

    # -- leads -------------------------------------------------------------------------------
    async def _lead(self, parsed: Parsed, lead: LeadCreated, deadline: float) -> None:
        identity = await self._merge(enrich.identity_update(lead))
        if lead.deal_id is not None and not identity.has_identifier():
            # Orders go to Metrica only for clients it can bind: the lead waits like any
            # other order event of a client without an identifier.
            if parsed.released:
                await self._record(Changes(unlease=[lead.event_id]))
            else:
                await self._park(parsed, lead.client.uniq_id, lead.deal_id, None)
            return
        changes = Changes()
        ack = await self._ensure_contact(identity, deadline, changes)
        if lead.deal_id is None:
            await self._finish(parsed, Outcome.DELIVERED, "contact", ack, changes)
            return
        await self._with_claim(
            lead.deal_id,
            lambda order: mapping.on_lead(order, lead, self.statuses, _now()),
            parsed,
            deadline,
            changes,
            contact_ack=ack,
        )

    async def _ensure_contact(
        self, identity: Identity, deadline: float, changes: Changes
    ) -> Ack | None:
        """Upload the client's contact unless Metrica already holds exactly this version."""
        rendered = enrich.contact_record(identity, self.hash_identifiers).render(self.zone)
        fingerprint = enrich.fingerprint(rendered)
        client = identity.client_uniq_id
        if fingerprint in (identity.uploaded_fingerprint, self._uploaded.get(client)):
            return None
        ack = await self.batcher.submit(Endpoint.CONTACTS, client, rendered, deadline)
        self._uploaded[client] = fingerprint
        self._uploaded.move_to_end(client)
        if len(self._uploaded) > UPLOADED_CACHE:
            self._uploaded.popitem(last=False)
        changes.contacts_uploaded[client] = fingerprint
        return ack

    # -- deals and payments ------------------------------------------------------------------
    async def _order_event(
        self, parsed: Parsed, event: DealStatusChanged | PaymentReceived, deadline: float
    ) -> None:
        identity = await self._identities.load(event.client_uniq_id)
        waiting = identity is None or not identity.has_identifier()
        # Behind parked events of the same deal, an event parks too, to keep the deal's order;
        # a released event is itself still in the park until it is recorded.
        if (
            identity is None
            or waiting
            or (not parsed.released and await self._parked.load(event.deal_id))
        ):
            if parsed.released:
                # Consent was withdrawn since the sweep: it stays parked, and its lease ends now
                # (the heartbeat would renew it forever) so the next sweep decides again.
                await self._record(Changes(unlease=[event.event_id]))
                return
            version = event.version if isinstance(event, DealStatusChanged) else None
            await self._park(parsed, event.client_uniq_id, event.deal_id, version)
            return
        changes = Changes()
        ack = await self._ensure_contact(identity, deadline, changes)
        decide = (
            (lambda order: mapping.on_status(order, event, self.statuses, _now()))
            if isinstance(event, DealStatusChanged)
            else (lambda order: mapping.on_payment(order, event, self.statuses, _now()))
        )
        await self._with_claim(event.deal_id, decide, parsed, deadline, changes, contact_ack=ack)

    async def _with_claim(
        self,
        deal_id: str,
        decide: mapping.Decider,
        parsed: Parsed,
        deadline: float,
        changes: Changes,
        contact_ack: Ack | None,
    ) -> None:
        await self._acquire(deal_id)
        changes.release_claims.append(deal_id)
        try:
            order = await self._orders.load(deal_id)
            verdict = decide(order)
            if isinstance(verdict, mapping.Skip):
                if verdict.state is not None:
                    changes.orders.append(verdict.state)
                await self._finish(parsed, verdict.outcome, verdict.reason, contact_ack, changes)
                return
            for window in verdict.windows:
                ORDERS_OUTSIDE_WINDOW.labels(window=window).inc()
                log.warning(
                    "order outside Metrica's binding window",
                    window=window,
                    event_id=parsed.event.event_id,
                    topic=parsed.source.topic,
                    partition=parsed.source.partition,
                    offset=parsed.source.offset,
                )
            event_id = parsed.event.event_id
            ack = await self._recovered(event_id)
            if ack is None:
                record = verdict.record.render(self.zone)
                ack = await self.batcher.submit(
                    Endpoint.ORDERS, deal_id, record, deadline, event_id
                )
            changes.orders.append(verdict.state)
            await self._finish(parsed, Outcome.DELIVERED, "order", ack, changes)
        except BaseException:
            # Best effort, once: if the store is gone too, the lease lapses on its own.
            with contextlib.suppress(Exception):
                await self.recorder.apply(Changes(release_claims=[deal_id]))
            raise

    async def _recovered(self, event_id: str) -> Ack | None:
        """The upload of a previous run that already carried this event, if Metrica applied it."""
        intent = await self._inflight.load(event_id)
        if intent is None or intent.owner == self.owner or self.reconciler is None:
            return None
        uploading_id = await self.reconciler.applied(intent)
        if uploading_id is None:
            return None
        return Ack(uploading_id, intent.records, time.time())

    async def _acquire(self, deal_id: str) -> None:
        delay = 0.02
        while not await self._claim(deal_id):
            # Another worker (this process or another) is updating the order: wait our turn.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _park(self, parsed: Parsed, client: str, deal_id: str, version: int | None) -> None:
        source, event = parsed.source, parsed.event
        parked = ParkedEvent(
            event_id=event.event_id,
            topic=source.topic,
            partition=source.partition,
            offset=source.offset,
            key=source.key,
            value=source.value or b"",
            headers=source.headers,
            client_uniq_id=client,
            deal_id=deal_id,
            occurred_at=event.occurred_at,
            version=version,
            parked_at=datetime.now(UTC),
            timestamp_ms=source.timestamp_ms,
        )
        await self._record(Changes(park=[parked]))
        # A copy of it arriving while it waits (a CRM retry) is a duplicate, not a second
        # parked event that would never get an outcome of its own.
        self.dedupe.remember([LedgerEntry(event.event_id, source.topic, Outcome.PARKED)])
        EVENTS_PROCESSED.labels(topic=source.topic, outcome=Outcome.PARKED).inc()
        log.info(
            "parked until the client's identity arrives",
            event_id=event.event_id,
            topic=source.topic,
            partition=source.partition,
            offset=source.offset,
        )

    # -- recording ---------------------------------------------------------------------------
    async def _finish(
        self, parsed: Parsed, outcome: str, detail: str, ack: Ack | None, changes: Changes
    ) -> None:
        source, event = parsed.source, parsed.event
        changes.ledger.append(
            LedgerEntry(
                event.event_id, source.topic, outcome, detail, ack.uploading_id if ack else None
            )
        )
        if parsed.released:
            changes.unpark.append(event.event_id)
        await self._record(changes)
        if outcome == Outcome.DELIVERED and ack is not None:
            END_TO_END_LATENCY.labels(topic=source.topic).observe(
                max(0.0, ack.acked_at - event.occurred_at.timestamp())
            )

    async def _record(self, changes: Changes) -> None:
        """Write the outcome, retrying in place on store errors (a PostgreSQL deadlock, a
        failover): what Metrica already accepted must be recorded, not handled again from
        scratch — that would send it twice. The order claims stay held meanwhile."""
        delay = 0.05
        while True:
            try:
                await self.recorder.apply(changes)
                break
            except StoreError as exc:
                log.warning("recording outcomes failed; retrying", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.dedupe.remember(changes.ledger)


def _now() -> datetime:
    return datetime.now(UTC)
