"""An event's way through Metrica once it was decided: the client's contact first (Metrica
binds orders only through contacts uploaded before them), then the order; and how each upload
settles the events waiting on it.

Records go to the :class:`~metrica_bridge.steps.batch.Batcher`, which sends them in batches and
calls :meth:`Uploads.settled` with each batch's answer. An order a crashed run may already have
sent is first looked up by the :class:`~metrica_bridge.steps.reconcile.Reconciler`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from metrica_bridge.engine.contacts import Contacts
from metrica_bridge.engine.work import Work
from metrica_bridge.logs import get_logger
from metrica_bridge.metrica.errors import RetryExhausted
from metrica_bridge.metrics import CONTACTS_RESENT, ORDER_RULES, ORDERS_OUTSIDE_WINDOW
from metrica_bridge.outcomes import ErrorClass, Outcome
from metrica_bridge.steps import enrich
from metrica_bridge.steps import order_rules as mapping
from metrica_bridge.steps.batch import Ack, Batcher, Endpoint, Pending
from metrica_bridge.steps.reconcile import Reconciler
from metrica_bridge.steps.send import Rejected
from metrica_bridge.store.base import Identity, Store, UploadIntent

log = get_logger("metrica_bridge.engine.uploads")


class Ends(Protocol):
    """How an upload's answer ends the events waiting on it (the pipeline)."""

    def finish(self, work: Work, outcome: Outcome | None, detail: str = "") -> None: ...
    def dead_letter(self, work: Work, error_class: ErrorClass, reason: str) -> None: ...
    def retry(self, work: Work, error: BaseException | None) -> None: ...
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...
    def wake(self) -> None: ...


class Uploads:
    def __init__(
        self,
        batcher: Batcher,
        contacts: Contacts,
        store: Store,
        reconciler: Reconciler | None,
        ends: Ends,
        owner: str,
        zone: ZoneInfo,
    ) -> None:
        self.batcher = batcher
        self.contacts = contacts
        self._store = store
        self._reconciler = reconciler
        self._ends = ends
        self._owner = owner
        self._zone = zone

    def prepare_order(
        self, work: Work, order: mapping.Send | mapping.Skip, intent: UploadIntent | None
    ) -> None:
        """What the order becomes: a skip is the event's outcome; a send is rendered now and goes
        after the contact, through the reconciler when ``intent`` (another run's upload that
        carried this event) may have delivered it already."""
        work.order_state = order.state
        if isinstance(order, mapping.Skip):
            work.outcome, work.detail = order.outcome, order.reason
            return
        for rule in order.rules:
            ORDER_RULES.labels(rule=rule).inc()
            log.warning("order decided by rule", rule=rule, **work.log_fields())
        for window in order.windows:
            ORDERS_OUTSIDE_WINDOW.labels(window=window).inc()
            log.warning(
                "order outside Metrica's binding window", window=window, **work.log_fields()
            )
        work.order = order.record.render(self._zone)
        if intent is not None and intent.owner != self._owner:
            work.intent = intent

    def start(self, work: Work, identity: Identity) -> None:
        """The contact, unless Metrica holds exactly this version; then (or at once) the rest."""
        self._ensure_contact(work, identity)
        if work.contact is None:
            self._after_contact(work)

    def _ensure_contact(self, work: Work, identity: Identity) -> None:
        stale = self.contacts.stale(identity)
        if stale is None:
            return
        client, (fingerprint, rendered) = identity.client_uniq_id, stale
        work.contact = (client, fingerprint)
        waiting = self.contacts.on_its_way(client, fingerprint)
        if waiting is not None:
            waiting.waiters.append(work)  # the same contact is on its way already
            return
        record, encoded, _ = rendered or self.contacts.render(identity)
        deadline = self.batcher.deadline(work.consumed_at)
        pending = self.batcher.submit(
            Endpoint.CONTACTS, client, record, deadline, work, encoded=encoded
        )
        self.contacts.sending(client, fingerprint, pending)

    def _after_contact(self, work: Work) -> None:
        if work.order is not None:
            if work.intent is not None and self._reconciler is not None:
                self._ends.spawn(self._reconcile(work, work.intent, self._reconciler))
            else:
                self._send_order(work)
            return
        if work.outcome is None:  # a lead without a deal: the contact is the delivery
            work.outcome, work.detail = Outcome.DELIVERED, "contact"
        self._ends.finish(work, work.outcome, work.detail)

    def _send_order(self, work: Work) -> None:
        assert work.order is not None
        assert work.claim is not None
        deadline = self.batcher.deadline(work.consumed_at)
        self.batcher.submit(Endpoint.ORDERS, work.claim, work.order, deadline, work, work.ledger_id)

    async def _reconcile(self, work: Work, intent: UploadIntent, reconciler: Reconciler) -> None:
        """The upload of a previous run that already carried this event, if Metrica applied it."""
        try:
            uploading_id = await reconciler.applied(intent)
        except Exception as exc:
            self._ends.retry(work, exc)
            self._ends.wake()
            return
        work.intent = None
        if uploading_id is None:
            self._send_order(work)
            return
        work.ack = Ack(uploading_id, intent.records, time.time())
        self._ends.finish(work, Outcome.DELIVERED, "order")

    # -- answers -------------------------------------------------------------------------------
    def settled(self, endpoint: Endpoint, batch: list[Pending]) -> None:
        """The batcher's callback: one request's answer for each of its records."""
        if endpoint is Endpoint.CONTACTS:
            acked = [p for p in batch if isinstance(p.result, Ack)]
            if acked:
                self._ends.spawn(self._verify_contacts(acked))
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
            current = await asyncio.to_thread(self._store.identities, {p.record_id for p in acked})
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
            record, encoded, fingerprint = self.contacts.render(identity)
            if fingerprint == enrich.fingerprint(pending.encoded):
                done.append(pending)
                continue
            log.info("contact changed while it was uploaded; sending the current one")
            CONTACTS_RESENT.inc()
            again = self.batcher.resubmit(Endpoint.CONTACTS, pending, record, encoded)
            self.contacts.sending(pending.record_id, fingerprint, again)
        self._settle(Endpoint.CONTACTS, done)

    def _settle(self, endpoint: Endpoint, batch: list[Pending]) -> None:
        for pending in batch:
            result = pending.result
            fingerprint = ""
            if endpoint is Endpoint.CONTACTS:
                if isinstance(result, Ack):
                    # What Metrica holds now: the newest version merged into this upload.
                    fingerprint = enrich.fingerprint(pending.encoded)
                self.contacts.settled(pending.record_id, pending, fingerprint or None)
            for work in pending.waiters:
                self._answer(work, endpoint, pending.record_id, result, fingerprint)
        self._ends.wake()

    def _answer(
        self,
        work: Work,
        endpoint: Endpoint,
        record_id: str,
        result: Ack | Exception | None,
        fingerprint: str,
    ) -> None:
        if isinstance(result, Ack):
            work.ack = result
            if endpoint is Endpoint.CONTACTS:
                work.contact_uploaded = (record_id, fingerprint)
                work.contact = None
                self._after_contact(work)
            else:
                self._ends.finish(work, Outcome.DELIVERED, "order")
        elif isinstance(result, Rejected):
            self._ends.dead_letter(work, ErrorClass.REJECTED, result.reason)
        elif isinstance(result, RetryExhausted):
            self._ends.dead_letter(work, ErrorClass.RETRY_EXHAUSTED, str(result))
        else:
            self._ends.retry(work, result)
