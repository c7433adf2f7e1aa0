"""The engine: consumed records go through the steps in rounds, thousands at a time.

decode → validate → dedupe → enrich → map → batch → send → record, per event, but never event by
event: a round takes every lane head that is free to start (one per deal, see
:mod:`~metrica_bridge.engine.lanes`), reads what the round needs from the store in one worker
thread hop (outcomes, identities merged from leads, parked deals, order claims, order states,
upload intents), decides each event synchronously, and hands the records to the batcher.
Uploads settle through a callback; finished events are recorded together in ONE store
transaction, and only then are their offsets completed and their lanes moved on.

Every event ends with exactly one recorded outcome (delivered, skipped, stale, duplicate,
parked, dead-lettered). Infrastructure failures (the store or the broker unreachable) never
become outcomes: the event goes back to its lane and is tried again, its offset uncommitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from metrica_bridge.codec import Codec, SchemaUnavailable
from metrica_bridge.engine.align import Alignment
from metrica_bridge.engine.lanes import Lanes
from metrica_bridge.engine.offsets import TopicPartition
from metrica_bridge.engine.work import Done, Work
from metrica_bridge.events import (
    DealStatusChanged,
    Event,
    EventKind,
    LeadCreated,
    PaymentReceived,
)
from metrica_bridge.kafka.record import SourceRecord
from metrica_bridge.logs import get_logger
from metrica_bridge.metrica.errors import RetryExhausted
from metrica_bridge.metrica.status_map import StatusMap
from metrica_bridge.metrics import (
    CONTACTS_RESENT,
    DLQ_FAILURES,
    END_TO_END_LATENCY,
    ORDER_RULES,
    ORDERS_OUTSIDE_WINDOW,
)
from metrica_bridge.outcomes import ErrorClass, Outcome
from metrica_bridge.steps import enrich
from metrica_bridge.steps import order_rules as mapping
from metrica_bridge.steps.batch import Ack, Batcher, Endpoint, Pending, RequestLimits, SendFn
from metrica_bridge.steps.dedupe import Dedupe
from metrica_bridge.steps.dlq import DeadLetters, is_replay
from metrica_bridge.steps.parse import parse, resolve_schemas
from metrica_bridge.steps.persist import Recorder
from metrica_bridge.steps.reconcile import Reconciler
from metrica_bridge.steps.send import Rejected
from metrica_bridge.store.base import (
    WAITS_CREATION,
    WAITS_IDENTITY,
    Changes,
    ClaimLost,
    Claims,
    Identity,
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
UPLOADED_CACHE = 20_000  # clients; filled early in a stream, so memory stays flat after
ROUND_MAX = 2_000  # events read and decided together: one store round trip each
TICK_S = 0.05  # timers (retries, linger of held events) are looked at this often
RETRY_INFRA_S = (0.5, 1.0, 2.0, 5.0, 10.0)
# A record whose own handling raised this many times (the same bytes, the same code: it will
# raise again) ends as invalid_event instead of being retried forever (DESIGN.md §5).
MAX_RECORD_FAILURES = 5
CLAIM_WAIT_S = (0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0)


@dataclass(frozen=True, slots=True)
class Batching:
    max_records: int
    max_bytes: int
    linger_s: float
    limits: RequestLimits | None = None  # the largest request (default: max_records, max_bytes)
    pace_delay: Callable[[], float] = lambda: 0.0  # seconds until the pace lets a request go


@dataclass(slots=True)
class _Round:
    """What one round read from the store."""

    previous: dict[str, Outcome]  # ledger id -> outcome already recorded
    identities: dict[str, Identity]  # merged from this round's leads, or loaded
    parked: set[str]  # deals with parked events
    claimed: set[str]  # deals this round may update
    orders: dict[str, OrderState]
    inflight: dict[str, UploadIntent]  # event id -> an earlier upload that carried it
    taken: set[str] = field(default_factory=set)  # by a work of this round already
    epochs: dict[str, int] = field(default_factory=dict)  # claimed deal -> its claim's epoch


class Pipeline:
    def __init__(
        self,
        *,
        store: Store,
        codec: Codec,
        statuses: StatusMap,
        send: SendFn,
        batching: Batching,
        dead_letters: DeadLetters,
        timezone: str,
        topics: Mapping[EventKind, str],
        hash_identifiers: bool = False,
        owner: str | None = None,
        reconciler: Reconciler | None = None,
        concurrency: int = 10_000,
        alignment: Alignment | None = None,
    ) -> None:
        self.store = store
        self.codec = codec
        self.statuses = statuses
        self.dead_letters = dead_letters
        self.zone = ZoneInfo(timezone)
        self.kinds = {topic: kind for kind, topic in topics.items()}
        self.hash_identifiers = hash_identifiers
        self.owner = owner or f"mb-{uuid.uuid4().hex[:12]}"
        self.reconciler = reconciler
        self.concurrency = concurrency
        if alignment is None:
            alignment = Alignment((), margin_s=0, max_hold_s=0)
        self.alignment = alignment
        self.batcher = Batcher(
            send,
            on_settled=self._settled,
            max_records=batching.max_records,
            max_bytes=batching.max_bytes,
            linger_s=batching.linger_s,
            limits=batching.limits,
            pace_delay=batching.pace_delay,
        )
        self.recorder = Recorder(store)
        self.dedupe = Dedupe(store)
        self.lanes: Lanes[Work] = Lanes()
        self._active: set[Work] = set()  # started, not yet recorded
        self._finished: list[Work] = []  # to be recorded by the next cycle
        self._release_claims: list[str] = []  # claims of work that went back to its lane
        self._release_epochs: dict[str, int] = {}  # their epochs, when known (the fence)
        self._dead: list[tuple[Work, ErrorClass, str]] = []  # to be produced to the DLQ
        self._tasks: set[asyncio.Task[None]] = set()
        self._released = 0  # released parked events queued or running
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        # client -> (fingerprint, the contact upload carrying it), until Metrica answers
        self._contacts: dict[str, tuple[str, Pending]] = {}
        # client -> fingerprint Metrica holds, for contacts acknowledged but not yet in the store
        # (two leads of one client in flight at once); bounded, the store is the truth.
        self._uploaded: OrderedDict[str, str] = OrderedDict()
        # client -> (identity version, fingerprint of its contact): rendering a contact only to
        # learn that Metrica holds it already is most of an order event's cost otherwise.
        self._fingerprints: dict[str, tuple[tuple[object, ...], str]] = {}
        self._latency = {topic: END_TO_END_LATENCY.labels(topic=topic) for topic in topics.values()}

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="engine")

    async def close(self) -> None:
        """Stop at once (after the runners drained what they could)."""
        for task in [t for t in (self._loop_task,) if t is not None] + list(self._tasks):
            task.cancel()
        await asyncio.gather(
            *(t for t in (self._loop_task,) if t is not None), *self._tasks, return_exceptions=True
        )
        await self.batcher.close()

    # -- intake --------------------------------------------------------------------------------
    def consume(self, records: Iterable[SourceRecord], on_done: Done) -> None:
        """Records just consumed, in partition order. They are parsed when their turn comes:
        until then a waiting record costs its bytes, not a validated model (ten times more)."""
        now = time.monotonic()
        alignment, kinds = self.alignment, self.kinds
        for source in records:
            work = Work(source, _lane(source, kinds), consumed_at=now, on_done=on_done)
            if not alignment.hold(work):
                self.lanes.push(work)
        self._wake.set()

    def release(
        self,
        parked: ParkedEvent,
        event: Event | None,
        expired: str | None,
        *,
        creation_waited: bool = False,
    ) -> None:
        """A parked event moves on: what it waited for arrived (``event`` parsed again), or it
        waited too long (``expired`` says why; ``creation_waited``: it waited its whole time for
        the deal's creation time, and the order is created by rule). Ordered behind live events
        of its deal; not tracked, since its offset was committed when it was parked."""
        work = Work(
            parked_source(parked),
            f"deal:{parked.deal_id}",
            event,
            released=True,
            expired=expired,
            parked_id=parked.event_id,
            creation_waited=creation_waited,
            deal_created_at=parked.deal_created_at,
        )
        if event is None and expired is None:
            work.expired = "the parked record can no longer be read"
        self._released += 1
        self.lanes.push(work)
        self._wake.set()

    # -- what the runners ask ------------------------------------------------------------------
    def drop(self, tps: set[TopicPartition]) -> int:
        """Forget work of these partitions not started yet (its records are handed back)."""
        dropped = self.lanes.drop(lambda w: w.tp in tps) + self.alignment.drop(tps)
        self._released -= sum(1 for w in dropped if w.released)
        return len(dropped)

    def busy(self, tps: set[TopicPartition]) -> int:
        return sum(1 for w in self._active if w.tp in tps)

    def abandon(self, tps: set[TopicPartition]) -> int:
        """Work of these partitions still running goes on, but no longer completes an offset
        (the partition has moved on); its outcome is still recorded when it ends."""
        abandoned = [w for w in self._active if w.tp in tps]
        for work in abandoned:
            work.on_done = None
        return len(abandoned)

    def released_in_progress(self) -> int:
        return self._released

    async def wait_done(self, tps: set[TopicPartition], within_s: float) -> bool:
        """Wait until no work of these partitions is running; False if it took too long."""
        deadline = time.monotonic() + within_s
        while self.busy(tps):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    # -- the loop ------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                await self._cycle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug, not an event's fault: log it, keep going
                log.error("engine cycle failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.5)

    async def _cycle(self) -> None:
        now = time.monotonic()
        for work in self.alignment.release(now):
            self.lanes.push(work)
        self.lanes.wake(now)
        if self._dead:
            self._spawn(self._dead_letters(self._dead))
            self._dead = []
        if self._finished or self._release_claims:
            await self._record()
        room = self.concurrency - len(self._active)
        batch = self.lanes.take(min(ROUND_MAX, room)) if room > 0 else []
        if batch:
            await self._start(batch)
            await asyncio.sleep(0)
            return
        if not self._finished and not self._dead:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- a round -------------------------------------------------------------------------------
    async def _start(self, batch: list[Work]) -> None:
        self._active.update(batch)
        # Schema ids the codec has not seen are asked of the registry off the loop (issue 16).
        await resolve_schemas(
            self.codec,
            (w.source for w in batch if w.event is None and w.poison is None and w.expired is None),
        )
        ready: list[Work] = []
        for work in batch:
            if work.event is None and work.poison is None and work.expired is None:
                try:
                    parsed = parse(self.codec, self.kinds, work.source)
                except SchemaUnavailable as exc:
                    self._retry(work, exc)
                    continue
                except Exception as exc:  # this record's fault, or a bug: it alone waits
                    self._fail(work, exc)
                    continue
                if isinstance(parsed, tuple):
                    work.poison = parsed
                else:
                    work.event = parsed
            ready.append(work)
        if not ready:
            return
        # A replayed record is a dead letter coming back, and only the store can say what became
        # of its event since: this process may remember it parked (then finished by another
        # process's sweeper) or dead-lettered (then delivered by an earlier replay elsewhere),
        # and would drop the replay as a duplicate, or send it twice.
        replays = {w.ledger_id for w in ready if is_replay(w.source)}
        known, missing = self.dedupe.known(w.ledger_id for w in ready if w.ledger_id not in replays)
        missing.extend(replays)
        try:
            state = await asyncio.to_thread(self._read, ready, known, missing)
        except Exception as exc:
            # The store failed us: one line for the round, not one per event.
            delay = RETRY_INFRA_S[min(ready[0].attempts, len(RETRY_INFRA_S) - 1)]
            log.error(
                "round failed; its events are retried",
                events=len(ready),
                error=f"{type(exc).__name__}: {exc}",
                retry_in_s=delay,
            )
            for work in ready:
                self._retry(work, exc, quiet=True)
            return
        for work in ready:
            try:
                self._decide(work, state)
            except Exception as exc:
                self._fail(work, exc)
        # Claimed for work that did not take it after all (it failed on the way): let it go now
        # rather than when the lease lapses.
        taken = {w.claim for w in ready if w.claim is not None}
        self._release_claims.extend(state.claimed - taken)
        self._release_epochs.update({d: e for d, e in state.epochs.items() if d not in taken})

    def _read(self, batch: list[Work], known: dict[str, Outcome], missing: list[str]) -> _Round:
        """Everything the round needs from the store (runs in a worker thread)."""
        store = self.store
        previous = known | self.dedupe.recorded(missing)
        leads: list[LeadCreated] = []
        merging: list[LeadCreated] = []
        orders: list[Work] = []
        for work in batch:
            event = work.event
            if event is None or work.expired or self._repeat(work, previous.get(work.ledger_id)):
                continue
            if isinstance(event, LeadCreated):
                leads.append(event)
                # A lead leaving the park was merged when it parked; merging it again would
                # bring back its consent over a newer lead's.
                if not work.released:
                    merging.append(event)
            else:
                orders.append(work)
        identities = (
            store.merge_identities([enrich.identity_update(lead) for lead in merging])
            if merging
            else {}
        )
        wanted = {lead.client.uniq_id for lead in leads} | {_client(w) for w in orders}
        wanted -= identities.keys()
        if wanted:
            identities.update(store.identities(wanted))
        live_deals = {_deal(w) for w in orders if not w.released}
        parked = store.parked_deals(live_deals) if live_deals else set()
        claims = [
            lead.deal_id
            for lead in leads
            if lead.deal_id is not None and _bindable(identities.get(lead.client.uniq_id))
        ]
        for work in orders:
            deal = _deal(work)
            if _bindable(identities.get(_client(work))) and (work.released or deal not in parked):
                claims.append(deal)
        claimed = store.claim_orders(claims, self.owner, CLAIM_LEASE_S) if claims else Claims()
        states = store.orders(claimed) if claimed else {}
        inflight: dict[str, UploadIntent] = {}
        if claimed and self.reconciler is not None:
            ids = [
                w.event.event_id
                for w in batch
                if w.event is not None and getattr(w.event, "deal_id", None) in claimed
            ]
            inflight = store.inflight(ids)
        return _Round(
            previous, identities, parked, claimed, states, inflight, epochs=claimed.epochs
        )

    def _repeat(self, work: Work, previous: Outcome | None) -> bool:
        """Seen before, and not coming back the ways an event may come back: a DLQ replay is
        the one way back for a dead-lettered event, and a parked event leaving the park is that
        same event, not a duplicate of itself."""
        if previous is None:
            return False
        if previous == Outcome.DEAD_LETTERED and is_replay(work.source):
            return False
        return not (previous == Outcome.PARKED and work.released)

    def _decide(self, work: Work, state: _Round) -> None:
        previous = state.previous.get(work.ledger_id)
        if self._repeat(work, previous):
            if work.released:  # handled already: leave the park (or be leased forever)
                work.unpark = True
            log.debug("duplicate", previous=previous, **work.log_fields())
            self._finish(work, Outcome.DUPLICATE)
            return
        if work.poison is not None:
            self._dead_letter(work, *work.poison)
            return
        if work.expired is not None:
            self._dead_letter(work, ErrorClass.UNATTRIBUTABLE, work.expired)
            return
        event = work.event
        assert event is not None
        if isinstance(event, LeadCreated):
            deal = event.deal_id
            identity = state.identities.get(event.client.uniq_id) or Identity(event.client.uniq_id)
            if deal is not None and not identity.has_identifier():
                # Orders go to Metrica only for clients it can bind: the lead waits like any
                # other order event of a client without an identifier.
                self._wait(work, event.client.uniq_id, deal, None, WAITS_IDENTITY)
                return
        else:
            found = state.identities.get(event.client_uniq_id)
            deal = event.deal_id
            # Behind parked events of the same deal, an event parks too, to keep the deal's
            # order; a released event is itself still in the park until it is recorded.
            if (
                found is None
                or not found.has_identifier()
                or (not work.released and deal in state.parked)
            ):
                version = event.version if isinstance(event, DealStatusChanged) else None
                self._wait(work, event.client_uniq_id, deal, version, WAITS_IDENTITY)
                return
            identity = found
        if deal is not None and not self._order(work, deal, state):
            return
        self._ensure_contact(work, identity)
        if work.contact is None:
            self._after_contact(work)

    def _order(self, work: Work, deal: str, state: _Round) -> bool:
        """Decide what the order becomes; False when the event goes no further now (someone
        else is updating the order, it waits for the deal's creation time, or it is invalid)."""
        if deal not in state.claimed or deal in state.taken:
            # Another worker (this process or another) is updating the order: wait our turn.
            work.claim_waits += 1
            delay = CLAIM_WAIT_S[min(work.claim_waits, len(CLAIM_WAIT_S)) - 1]
            self._back(work, delay)
            return False
        work.claim = deal
        work.epoch = state.epochs.get(deal)
        state.taken.add(deal)
        event = work.event
        now = datetime.now(UTC)
        order = state.orders.get(deal)
        verdict: mapping.Verdict
        if isinstance(event, LeadCreated):
            verdict = mapping.on_lead(order, event, self.statuses, now)
        elif isinstance(event, DealStatusChanged):
            verdict = mapping.on_status(order, event, self.statuses, now)
        else:
            assert isinstance(event, PaymentReceived)
            verdict = mapping.on_payment(
                order,
                event,
                self.statuses,
                now,
                creation_waited=work.creation_waited,
                deal_created_at=work.deal_created_at,
            )
            if isinstance(verdict, mapping.Wait):
                self._wait(work, event.client_uniq_id, deal, None, WAITS_CREATION)
                return False
        if isinstance(verdict, mapping.Invalid):
            self._dead_letter(work, ErrorClass.INVALID_EVENT, verdict.reason)
            return False
        if isinstance(verdict, mapping.Skip):
            work.order_state = verdict.state
            work.outcome, work.detail = verdict.outcome, verdict.reason
            return True
        for rule in verdict.rules:
            ORDER_RULES.labels(rule=rule).inc()
            log.warning("order decided by rule", rule=rule, **work.log_fields())
        for window in verdict.windows:
            ORDERS_OUTSIDE_WINDOW.labels(window=window).inc()
            log.warning(
                "order outside Metrica's binding window", window=window, **work.log_fields()
            )
        work.order_state = verdict.state
        work.order = verdict.record.render(self.zone)
        intent = state.inflight.get(work.ledger_id)
        if intent is not None and intent.owner != self.owner:
            work.intent = intent
        return True

    def _ensure_contact(self, work: Work, identity: Identity) -> None:
        """Upload the client's contact unless Metrica already holds exactly this version."""
        client = identity.client_uniq_id
        version: tuple[object, ...] = (
            identity.client_ids,
            identity.phones,
            identity.emails,
            identity.name,
            identity.consent,
        )
        known = self._fingerprints.get(client)
        contact = None
        if known is not None and known[0] == version:
            fingerprint = known[1]  # rendered already for an earlier event of this client
        else:
            contact = enrich.contact(identity, self.hash_identifiers, self.zone)
            fingerprint = contact[2]
            self._fingerprints[client] = (version, fingerprint)
            if len(self._fingerprints) > UPLOADED_CACHE:
                self._fingerprints.pop(next(iter(self._fingerprints)))
        if fingerprint in (identity.uploaded_fingerprint, self._uploaded.get(client)):
            return
        work.contact = (client, fingerprint)
        current = self._contacts.get(client)
        if current is not None and current[0] == fingerprint and current[1].result is None:
            current[1].waiters.append(work)  # the same contact is on its way already
            return
        if contact is None:
            contact = enrich.contact(identity, self.hash_identifiers, self.zone)
        rendered, encoded, _ = contact
        deadline = self.batcher.deadline(work.consumed_at)
        pending = self.batcher.submit(
            Endpoint.CONTACTS, client, rendered, deadline, work, encoded=encoded
        )
        self._contacts[client] = (fingerprint, pending)

    def _after_contact(self, work: Work) -> None:
        if work.order is not None:
            if work.intent is not None and self.reconciler is not None:
                self._spawn(self._reconcile(work, work.intent))
            else:
                self._send_order(work)
            return
        if work.outcome is None:  # a lead without a deal: the contact is the delivery
            work.outcome, work.detail = Outcome.DELIVERED, "contact"
        self._finish(work, work.outcome, work.detail)

    def _send_order(self, work: Work) -> None:
        assert work.order is not None
        assert work.claim is not None
        self.batcher.submit(
            Endpoint.ORDERS,
            work.claim,
            work.order,
            self.batcher.deadline(work.consumed_at),
            work,
            work.ledger_id,
        )

    async def _reconcile(self, work: Work, intent: UploadIntent) -> None:
        """The upload of a previous run that already carried this event, if Metrica applied it."""
        assert self.reconciler is not None
        try:
            uploading_id = await self.reconciler.applied(intent)
        except Exception as exc:
            self._retry(work, exc)
            self._wake.set()
            return
        work.intent = None
        if uploading_id is None:
            self._send_order(work)
            return
        work.ack = Ack(uploading_id, intent.records, time.time())
        self._finish(work, Outcome.DELIVERED, "order")

    def _wait(
        self, work: Work, client: str, deal: str, version: int | None, waits_for: str
    ) -> None:
        """Park the event until ``waits_for`` arrives (WAITS_IDENTITY: an identifier for the
        client; WAITS_CREATION: the deal's creation time)."""
        if work.released:
            # Still waiting (consent withdrawn since the sweep, say): it stays parked, and its
            # lease ends now (the heartbeat would renew it forever) so the next sweep decides.
            work.unlease = True
            self._finish(work, None)
            return
        source, event = work.source, work.event
        assert event is not None
        work.park = ParkedEvent(
            event_id=event.event_id,
            topic=source.topic,
            partition=source.partition,
            offset=source.offset,
            key=source.key,
            value=source.value or b"",
            headers=source.headers,
            client_uniq_id=client,
            deal_id=deal,
            occurred_at=event.occurred_at,
            version=version,
            parked_at=datetime.now(UTC),
            timestamp_ms=source.timestamp_ms,
            waits_for=waits_for,
            deal_created_at=_created(event),
        )
        waiting = "client's identity" if waits_for == WAITS_IDENTITY else "deal's creation time"
        log.debug(f"parked until the {waiting} arrives", **work.log_fields())
        self._finish(work, Outcome.PARKED)

    # -- uploads settle ------------------------------------------------------------------------
    def _settled(self, endpoint: Endpoint, batch: list[Pending]) -> None:
        if endpoint is Endpoint.CONTACTS:
            acked = [p for p in batch if isinstance(p.result, Ack)]
            if acked:
                self._spawn(self._verify_contacts(acked))
                batch = [p for p in batch if not isinstance(p.result, Ack)]
        self._settle(endpoint, batch)

    async def _verify_contacts(self, acked: list[Pending]) -> None:
        """Another process may have uploaded the same client's contact, with identifiers from
        a lead it handled, and ours landed after theirs: under UPDATE the lists we sent replace
        theirs, and Metrica holds less than the store knows (issue 16, item 13: two instances
        lost a ClientID). So after each ack the identity is read again; if it renders otherwise
        than what we sent, the current one is sent again, for the same waiters, before they go
        on. The last upload to land is always checked after it landed, so Metrica ends with the
        whole identity; it costs a read per acked batch and a request only when a race happened."""
        try:
            current = await asyncio.to_thread(self.store.identities, {p.record_id for p in acked})
        except Exception as exc:
            # Unverified, not lost: the client's next event compares again.
            log.warning("contact check after upload failed", error=f"{type(exc).__name__}: {exc}")
            current = {}
        done: list[Pending] = []
        for pending in acked:
            identity = current.get(pending.record_id)
            if identity is None:
                done.append(pending)
                continue
            rendered, encoded, fingerprint = enrich.contact(
                identity, self.hash_identifiers, self.zone
            )
            if fingerprint == enrich.fingerprint(pending.encoded):
                done.append(pending)
                continue
            log.info("contact changed while it was uploaded; sending the current one")
            CONTACTS_RESENT.inc()
            again = self.batcher.resubmit(Endpoint.CONTACTS, pending, rendered, encoded)
            self._contacts[pending.record_id] = (fingerprint, again)
        self._settle(Endpoint.CONTACTS, done)

    def _settle(self, endpoint: Endpoint, batch: list[Pending]) -> None:
        for pending in batch:
            result = pending.result
            fingerprint = ""
            if endpoint is Endpoint.CONTACTS:
                entry = self._contacts.get(pending.record_id)
                if entry is not None and entry[1] is pending:
                    del self._contacts[pending.record_id]
                if isinstance(result, Ack):
                    # What Metrica holds now: the newest version merged into this upload.
                    fingerprint = enrich.fingerprint(pending.encoded)
                    self._remember_contact(pending.record_id, fingerprint)
            for work in pending.waiters:
                if isinstance(result, Ack):
                    work.ack = result
                    if endpoint is Endpoint.CONTACTS:
                        work.contact_uploaded = (pending.record_id, fingerprint)
                        work.contact = None
                        self._after_contact(work)
                    else:
                        self._finish(work, Outcome.DELIVERED, "order")
                elif isinstance(result, Rejected):
                    self._dead_letter(work, ErrorClass.REJECTED, result.reason)
                elif isinstance(result, RetryExhausted):
                    self._dead_letter(work, ErrorClass.RETRY_EXHAUSTED, str(result))
                else:
                    self._retry(work, result)
        self._wake.set()

    def _remember_contact(self, client: str, fingerprint: str) -> None:
        self._uploaded[client] = fingerprint
        self._uploaded.move_to_end(client)
        if len(self._uploaded) > UPLOADED_CACHE:
            self._uploaded.popitem(last=False)

    # -- dead letters --------------------------------------------------------------------------
    def _dead_letter(self, work: Work, error_class: ErrorClass, reason: str) -> None:
        work.order = work.order_state = None  # nothing of the order was sent
        self._dead.append((work, error_class, reason))
        self._wake.set()

    async def _dead_letters(self, items: list[tuple[Work, ErrorClass, str]]) -> None:
        """Produce to the DLQ; an event is recorded dead-lettered only once the broker has
        the record (retried until it does: a crash meanwhile redelivers the original)."""
        tries = 0
        while items:
            sent = await asyncio.gather(
                *(self.dead_letters.send(w.source, c, r, w.attempts + 1) for w, c, r in items),
                return_exceptions=True,
            )
            failed = []
            error = ""
            for (work, error_class, reason), result in zip(items, sent, strict=True):
                if isinstance(result, BaseException):
                    failed.append((work, error_class, reason))
                    DLQ_FAILURES.labels(topic=work.source.topic).inc()
                    error = f"{type(result).__name__}: {result}"
                    continue
                log.warning(
                    "dead-lettered",
                    error_class=error_class.value,
                    reason=reason,
                    **work.log_fields(),
                )
                self._finish(work, Outcome.DEAD_LETTERED, error_class.value)
            if failed:
                # Nothing to drop and nowhere else to put it: the partition holds (it commits
                # nothing past it), the DLQ-failure alert fires, and the wait grows.
                delay = RETRY_INFRA_S[min(tries, len(RETRY_INFRA_S) - 1)]
                tries += 1
                log.error(
                    "dead-letter produce failed; retrying",
                    count=len(failed),
                    error=error,
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
            items = failed

    # -- ends ----------------------------------------------------------------------------------
    def _finish(self, work: Work, outcome: Outcome | None, detail: str = "") -> None:
        work.outcome = outcome
        if outcome is not None and outcome not in (Outcome.DUPLICATE, Outcome.PARKED):
            ack = work.ack
            work.ledger = LedgerEntry(
                work.ledger_id,
                work.source.topic,
                outcome,
                detail,
                ack.uploading_id if ack is not None else None,
            )
            if work.released:
                work.unpark = True
        self._finished.append(work)
        self._wake.set()

    def _fail(self, work: Work, error: Exception) -> None:
        """Handling this record raised: try it again, alone, unless it has failed so often that
        it would fail forever; then it ends as invalid_event (type only: the text may quote
        personal data)."""
        work.failures += 1
        if work.failures < MAX_RECORD_FAILURES:
            self._retry(work, error)
            return
        log.error(
            "event handling keeps failing; dead-lettered",
            error=f"{type(error).__name__}: {error}",
            failures=work.failures,
            **work.log_fields(),
        )
        if work.claim is not None:
            self._release_claims.append(work.claim)
        work.reset()
        reason = f"handling failed {work.failures} times: {type(error).__name__}"
        self._dead_letter(work, ErrorClass.INVALID_EVENT, reason)

    def _retry(self, work: Work, error: BaseException | None, *, quiet: bool = False) -> None:
        """An infrastructure failure: the event is not handled; try it again from the start."""
        delay = RETRY_INFRA_S[min(work.attempts, len(RETRY_INFRA_S) - 1)]
        work.attempts += 1
        if not quiet:
            log.error(
                "event handling failed; retrying",
                error=f"{type(error).__name__}: {error}",
                retry_in_s=delay,
                **work.log_fields(),
            )
        self._back(work, delay)

    def _back(self, work: Work, delay: float) -> None:
        if work.claim is not None:
            self._release_claims.append(work.claim)
            if work.epoch is not None:
                self._release_epochs[work.claim] = work.epoch
        work.reset()
        self._active.discard(work)
        self.lanes.retry(work, time.monotonic() + delay)

    async def _record(self) -> None:
        works, self._finished = self._finished, []
        released, self._release_claims = self._release_claims, []
        epochs, self._release_epochs = self._release_epochs, {}
        # One part per work, and one for the claims of work gone back: the store writes them
        # together, and the recorder leaves out (and names) a part whose claim was lost or that
        # the store refuses, so one event never holds the others (issue 16).
        free = Changes(release_claims=list(released), owner=self.owner)
        free.epochs = {deal: epochs[deal] for deal in released if deal in epochs}
        whole = Changes(owner=self.owner)
        for work in works:
            self._changes(work, whole)
        whole.ledger.extend(free.ledger)
        whole.release_claims.extend(free.release_claims)
        whole.epochs.update(free.epochs)

        def parts() -> list[Changes]:
            return [*(self._changes(work, Changes(owner=self.owner)) for work in works), free]

        try:
            failed = await self.recorder.record(whole, parts)
        except Exception:
            # Not the store being down (the recorder waits that out): still, nothing finished
            # may be lost, so these go round again with the next cycle.
            self._finished[:0] = works
            self._release_claims[:0] = released
            self._release_epochs = epochs | self._release_epochs
            raise
        if len(works) in failed:
            log.error(
                "releasing claims refused", deals=len(released), error=str(failed[len(works)])
            )
        recorded: list[Work] = []
        for index, work in enumerate(works):
            error = failed.get(index)
            if error is None:
                recorded.append(work)
            elif isinstance(error, ClaimLost):
                self._claim_lost(work)
            elif self._refused(work, error):
                recorded.append(work)
        self.recorder.count(
            Counter((w.source.topic, w.outcome) for w in recorded if w.outcome is not None)
        )
        self.dedupe.remember([w.ledger for w in recorded if w.ledger is not None])
        # A copy of a parked event arriving while it waits (a CRM retry) is a duplicate, not a
        # second parked event that would never get an outcome of its own.
        self.dedupe.remember(
            [
                LedgerEntry(w.park.event_id, w.source.topic, Outcome.PARKED)
                for w in recorded
                if w.park is not None
            ]
        )
        for work in recorded:
            if (
                work.outcome == Outcome.DELIVERED
                and work.ack is not None
                and work.event is not None
            ):
                latency = work.ack.acked_at - work.event.occurred_at.timestamp()
                self._latency[work.source.topic].observe(max(0.0, latency))
            self._active.discard(work)
            self.lanes.done(work)
            if work.released:
                self._released -= 1
            if work.on_done is not None:
                work.on_done(work)

    @staticmethod
    def _changes(work: Work, changes: Changes) -> Changes:
        """Add what a finished work writes (fenced by its claim) to ``changes``."""
        if work.ledger is not None:
            changes.ledger.append(work.ledger)
        if work.order_state is not None:
            changes.orders.append(work.order_state)
        if work.contact_uploaded is not None:
            client, fingerprint = work.contact_uploaded
            changes.contacts_uploaded[client] = fingerprint
        if work.claim is not None:
            changes.release_claims.append(work.claim)
            if work.epoch is not None:
                changes.epochs[work.claim] = work.epoch
        if work.park is not None:
            changes.park.append(work.park)
        if work.unpark:
            changes.unpark.append(work.ledger_id)
        if work.unlease:
            changes.unlease.append(work.ledger_id)
        return changes

    def _claim_lost(self, work: Work) -> None:
        """Its lease lapsed and another process took the deal (and may have written a newer
        state): nothing of it was written; it decides again, from what the store holds now."""
        log.warning("order claim lost before recording; deciding again", **work.log_fields())
        work.claim = work.epoch = None  # not ours: nothing to release
        self._back(work, CLAIM_WAIT_S[0])

    def _refused(self, work: Work, error: StoreError) -> bool:
        """The store refuses what this work would write, on its own (a value it cannot hold):
        writing it again fails forever. It ends dead-lettered as ``invalid_event`` with the
        reason (and none of its order state); True when it ends now, without a ledger entry,
        because even that was refused (the DLQ has the record)."""
        log.error(
            "the store refuses the event's outcome; dead-lettered",
            error=str(error),
            outcome=work.outcome,
            **work.log_fields(),
        )
        if work.outcome == Outcome.DEAD_LETTERED:
            work.ledger = None  # the DLQ holds the record already
            if work.claim is not None:  # released apart (the heartbeat would renew it forever)
                self._release_claims.append(work.claim)
                if work.epoch is not None:
                    self._release_epochs[work.claim] = work.epoch
            work.claim = work.epoch = None
            return True
        work.order_state = work.contact_uploaded = work.park = work.ledger = None
        work.unlease = work.unpark = False
        self._dead_letter(work, ErrorClass.INVALID_EVENT, f"the store refuses it: {error}")
        return False


def _bindable(identity: Identity | None) -> bool:
    return identity is not None and identity.has_identifier()


def _deal(work: Work) -> str:
    event = work.event
    assert isinstance(event, DealStatusChanged | PaymentReceived)
    return event.deal_id


def _client(work: Work) -> str:
    event = work.event
    assert isinstance(event, DealStatusChanged | PaymentReceived)
    return event.client_uniq_id


def _created(event: Event) -> datetime | None:
    """The deal's creation time as the event tells it (a lead opening a deal creates it)."""
    if isinstance(event, LeadCreated):
        return event.occurred_at if event.deal_id is not None else None
    return event.deal_created_at


def _position(source: SourceRecord) -> str:
    return f"@{source.topic}:{source.partition}:{source.offset}"


def _lane(source: SourceRecord, kinds: Mapping[str, EventKind]) -> str:
    """The lane, from the record key (the entity id, DESIGN.md §2): one deal's status changes
    and payments share a lane, and so do the records of one lead. A lead that opens a deal
    meets that deal's events through the order's claim."""
    if source.key is None:
        return _position(source)
    key = source.key.decode("utf-8", "replace")
    return f"lead:{key}" if kinds.get(source.topic) is EventKind.LEAD_CREATED else f"deal:{key}"


def parked_source(parked: ParkedEvent) -> SourceRecord:
    return SourceRecord(
        topic=parked.topic,
        partition=parked.partition,
        offset=parked.offset,
        key=parked.key,
        value=parked.value,
        headers=parked.headers,
        timestamp_ms=parked.timestamp_ms,
    )
