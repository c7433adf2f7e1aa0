"""The state store interface (issue 5): ledger, identities, per-order state, parked events,
order claims and the shared Metrica request budget.

Two backends implement it: SQLite (embedded default, one host) and PostgreSQL (several instances).
The interface is synchronous and batch-oriented: the engine calls it from a worker thread, and
one call serves many events, so a store round trip is never paid per event on the hot path.

Every write that completes events goes through :meth:`Store.apply` with a :class:`Changes` unit of
work, in ONE transaction: the ledger outcome, the order state Metrica now holds, the contact
upload marks, released claims and parked-event moves land together or not at all. That is what
makes a crash between "Metrica acknowledged" and "offset committed" harmless: the redelivered
event finds its outcome in the ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from metrica_bridge.outcomes import Outcome

QuotaState = tuple[int, float]
"""One quota day's requests counted and when its next paced request is due (Unix seconds)."""
QuotaChange = Callable[[int, float], QuotaState | None]


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """The one recorded outcome of an event id."""

    event_id: str
    topic: str
    outcome: Outcome
    detail: str = ""  # reason / error class; never personal data
    upload_id: str | None = None  # Metrica uploading_id that carried it, when delivered
    recorded_at: datetime | None = None  # set by the store when None


@dataclass(frozen=True, slots=True)
class IdentityUpdate:
    """Identifiers learned from one lead; merged (set union) into the client's identity."""

    client_uniq_id: str
    client_ids: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()  # normalised
    emails: tuple[str, ...] = ()  # normalised
    name: str | None = None
    consent: bool | None = None  # None: unchanged; the latest lead's consent wins
    consent_at: datetime | None = None  # when the lead stated it: a lead older than the
    # consent already known does not override it, however late it is handled


@dataclass(frozen=True, slots=True)
class Identity:
    client_uniq_id: str
    client_ids: tuple[str, ...] = ()  # sorted, unique
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    name: str | None = None
    consent: bool = True
    consent_at: datetime | None = None  # occurred_at of the lead the consent comes from
    uploaded_fingerprint: str | None = None  # fingerprint of the contact last accepted by Metrica
    created_at: datetime | None = None

    def has_identifier(self) -> bool:
        """An identifier Metrica may bind on; phones/emails count only with consent."""
        return bool(self.client_ids) or (self.consent and bool(self.phones or self.emails))


@dataclass(frozen=True, slots=True)
class OrderState:
    """What Metrica holds for one order, as last acknowledged, plus what we learned."""

    deal_id: str
    client_uniq_id: str
    created_at: datetime | None = None  # create_date_time source; immutable once sent
    applied_at: datetime | None = None  # occurred_at of the last applied update
    applied_version: int | None = None  # version of the last applied update (if the CRM has one)
    status: str | None = None  # Metrica status id last sent
    revenue: Decimal | None = None  # revenue last sent
    cost: Decimal | None = None
    currency: str | None = None
    deal_amount: Decimal | None = None  # the deal's amount when a status change carried it
    payments: Mapping[str, Decimal] = field(default_factory=dict)  # payment_id -> amount
    sent: bool = False  # whether Metrica has the order at all


WAITS_IDENTITY = "identity"  # the client has no ClientID, phone or email yet
WAITS_CREATION = "creation"  # the deal's creation time is not known yet (a payment came first)


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    """An event waiting for its client's identity; its offset may already be committed."""

    event_id: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    client_uniq_id: str
    deal_id: str
    occurred_at: datetime
    version: int | None
    parked_at: datetime
    timestamp_ms: int | None = None  # the original Kafka record timestamp
    waits_for: str = "identity"  # WAITS_IDENTITY or WAITS_CREATION
    # Parking: the deal's creation time this event names, if any. Taken from the park: the
    # earliest one any parked event of the deal names (a payment waiting for it uses it).
    deal_created_at: datetime | None = None


# An order upload's intent is also recorded under this key per order (besides its events' ids):
# another process about to update the order finds a crashed run's unsettled upload of it. The
# unit separator cannot start an event id (events.py refuses control characters).
ORDER_INTENT_PREFIX = "\x1forder:"


def order_intent_key(deal_id: str) -> str:
    return ORDER_INTENT_PREFIX + deal_id


@dataclass(frozen=True, slots=True)
class UploadIntent:
    """An upload about to be sent (or sent, outcome unknown until ``resolved``)."""

    intent_id: str
    owner: str  # the process that sent it
    endpoint: str  # contacts | orders
    records: int
    started_at: datetime
    resolved: bool = False
    uploading_id: str | None = None  # Metrica's id when it is known to have been applied
    # An attempt got an unclear answer and was sent again: it may also have been applied, under
    # an id nobody recorded (the reconciler counts the intent as a claimant, resolved or not).
    in_doubt: bool = False


@dataclass(slots=True)
class Changes:
    """One atomic unit of work. Empty fields are no-ops."""

    ledger: list[LedgerEntry] = field(default_factory=list)
    orders: list[OrderState] = field(default_factory=list)  # upserted whole
    contacts_uploaded: dict[str, str] = field(default_factory=dict)  # client -> fingerprint
    release_claims: list[str] = field(default_factory=list)  # deal ids
    park: list[ParkedEvent] = field(default_factory=list)
    unpark: list[str] = field(default_factory=list)  # event ids removed from the park
    # event ids taken from the park but not handled: they stay parked, their lease ends now so
    # the next sweep decides again (released, or unattributable once the wait is over)
    unlease: list[str] = field(default_factory=list)
    # Fencing (issue 16): with ``owner`` set, the orders are written only for deals whose claim
    # this owner still holds, at the epoch in ``epochs`` (deal -> ``Claims.epochs``) when given,
    # checked in the same transaction: otherwise nothing is written and ``ClaimLost`` names
    # them. Claims are released only where they are still this owner's (at that epoch).
    owner: str | None = None
    epochs: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.ledger
            or self.orders
            or self.contacts_uploaded
            or self.release_claims
            or self.park
            or self.unpark
            or self.unlease
        )


class Claims(set[str]):
    """The deals ``claim_orders`` claimed now (a set of deal ids), with each claim's ``epochs``:
    a number never given to another claim (of any deal), the fence of ``Changes.epochs``."""

    def __init__(self, epochs: Mapping[str, int] | None = None) -> None:
        super().__init__(epochs or ())
        self.epochs: dict[str, int] = dict(epochs or {})


def merge_changes(parts: Iterable[Changes]) -> Changes:
    """One unit of work doing what ``parts`` do, in their order (one owner for all)."""
    merged = Changes()
    for part in parts:
        merged.ledger.extend(part.ledger)
        merged.orders.extend(part.orders)
        merged.contacts_uploaded.update(part.contacts_uploaded)
        merged.release_claims.extend(part.release_claims)
        merged.park.extend(part.park)
        merged.unpark.extend(part.unpark)
        merged.unlease.extend(part.unlease)
        merged.epochs.update(part.epochs)
        if part.owner is not None:
            merged.owner = part.owner
    return merged


class StoreError(RuntimeError):
    """The store is unreachable or refused an operation (message has no personal data)."""


class StoreRefused(StoreError):
    """The store refuses the data itself (a value it cannot hold, a constraint): trying the
    same write again fails the same way."""


class ClaimLost(StoreError):
    """``Changes.owner`` no longer holds the claim (at its epoch) of these deals: its lease
    lapsed and another process took the deal. Nothing of the unit of work was written."""

    def __init__(self, deals: Iterable[str]) -> None:
        self.deals = frozenset(deals)
        super().__init__(f"claims lost on {len(self.deals)} deal(s)")


class Store(Protocol):
    """Implemented by ``SqliteStore`` and ``PostgresStore``; see ``open_store(url)``."""

    # lifecycle
    def migrate(self) -> int:
        """Apply pending versioned migrations; return the schema version. Safe to run concurrently."""
        ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...

    # ledger
    def outcomes(self, event_ids: Iterable[str]) -> dict[str, LedgerEntry]:
        """Recorded outcomes of those ids that have one."""
        ...

    def purge_ledger(self, older_than: datetime) -> int: ...

    # identities
    def merge_identities(self, updates: Sequence[IdentityUpdate]) -> dict[str, Identity]:
        """Union the identifiers into each client's identity (created if new); return results."""
        ...

    def identities(self, client_uniq_ids: Iterable[str]) -> dict[str, Identity]: ...

    # orders
    def orders(self, deal_ids: Iterable[str]) -> dict[str, OrderState]: ...

    def claim_orders(self, deal_ids: Iterable[str], owner: str, lease_s: float) -> Claims:
        """Claim each deal for exclusive update; return the ids claimed now (and their epochs).

        A deal is claimable when no live claim exists on it (whoever holds it, this owner
        included: one update of an order at a time, even inside one process) or the existing
        claim's lease expired. Claims end with ``Changes.release_claims`` or expire; a write
        fenced by ``Changes.owner`` / ``Changes.epochs`` fails with ``ClaimLost`` once another
        owner took the deal.
        """
        ...

    def renew_claims(self, owner: str, lease_s: float) -> int:
        """Extend every live lease of this owner, order claims and taken parked events alike
        (heartbeat); return how many order claims."""
        ...

    # parked events
    def parked_deals(self, deal_ids: Iterable[str]) -> set[str]:
        """Deals that have at least one parked event (new events of those deals park too)."""
        ...

    def take_ready_parked(
        self,
        topics: Iterable[str],
        owner: str,
        lease_s: float,
        expired_before: datetime,
        limit: int,
        creation_expired_before: datetime | None = None,
    ) -> list[ParkedEvent]:
        """Lease parked events of these topics that can move on: what they wait for arrived
        (their client has an identifier, ``Identity.has_identifier``; or their order's creation
        time is known), or they were parked before ``expired_before`` (waiting for an identity)
        or ``creation_expired_before`` (for a creation time; default ``expired_before``).
        Ordered by deal, then (occurred_at, version). Leased events are not returned again until
        the lease expires; they leave the park with ``Changes.unpark``."""
        ...

    def parked_count(self) -> int: ...

    # shared daily Metrica budget and its pace (several processes, one counter)
    def update_quota(self, day: str, change: QuotaChange) -> QuotaState:
        """In one transaction: read the quota day's ``(used, next_at)`` (``(0, 0.0)`` when new),
        call ``change`` with it, and store what it returns (``None``: store nothing). Returns
        the state stored. ``change`` must be quick and must not touch the store."""
        ...

    def quota_state(self, day: str) -> QuotaState:
        """The quota day's ``(used, next_at)``; ``(0, 0.0)`` when nothing was counted yet."""
        ...

    # upload intents (crash recovery of uploads whose answer was never read)
    def begin_upload(self, intent: UploadIntent, event_ids: Sequence[str]) -> None:
        """Record the intent and which events it carries, before the request is sent."""
        ...

    def finish_upload(self, intent_id: str, uploading_id: str | None) -> None:
        """Resolve: applied as ``uploading_id``, or known not applied (None)."""
        ...

    def doubt_upload(self, intent_id: str) -> None:
        """An attempt of this upload got an unclear answer (it may have been applied)."""
        ...

    def inflight(self, event_ids: Iterable[str]) -> dict[str, UploadIntent]:
        """The latest intent that carried each of these events, when it has one. An order's
        key (:func:`order_intent_key`) is answered only while its intent is unresolved: a
        settled upload of an order tells a later event nothing its stored state lacks, and
        most orders have one (decoding them cost every round a row per claimed order)."""
        ...

    def known_uploads(self, since: datetime) -> set[str]:
        """Metrica uploading ids already matched to an intent started since then."""
        ...

    def open_intents(self, since: datetime, until: datetime) -> list[UploadIntent]:
        """Intents (any owner) started in ``[since, until]`` that may own an upload nobody
        recorded: unresolved ones, and resolved ones in doubt."""
        ...

    # the unit of work
    def apply(self, changes: Changes) -> None:
        """Write everything in one transaction. Ledger inserts keep the FIRST outcome of an
        event id (a later insert for the same id is ignored), so redeliveries cannot rewrite
        history — except that a ``dead_lettered`` outcome gives way to a later outcome: a DLQ
        replay settling the event, or dead-lettering it again with the class that now holds. Recording an outcome forgets the event's
        upload intent (``inflight``). Raises ``ClaimLost`` (fencing, see ``Changes.owner``) or
        ``StoreRefused`` (the data itself is refused) with nothing written."""
        ...
