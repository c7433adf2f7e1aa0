"""One consumed record on its way through the engine, and what it will write when it is done.

A plain slotted object rather than a coroutine: the engine moves thousands of these at once, a
step at a time, so the cost of an event is the work done for it, not the machinery around it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from metrica_bridge.engine.offsets import TopicPartition
from metrica_bridge.events import Event, LeadCreated
from metrica_bridge.kafka.record import SourceRecord
from metrica_bridge.outcomes import ErrorClass, Outcome
from metrica_bridge.steps.batch import Ack
from metrica_bridge.store.base import LedgerEntry, OrderState, ParkedEvent, UploadIntent

Done = Callable[["Work"], None]


@dataclass(slots=True, eq=False)
class Work:
    source: SourceRecord
    key: str  # lane: one deal's (or lead's) work runs one at a time, in order
    event: Event | None = None
    # Why the record cannot be handled (decode_error, invalid_event); None also while the schema
    # registry could not be asked yet (then ``event`` is None too and parsing is tried again).
    poison: tuple[ErrorClass, str] | None = None
    released: bool = False  # taken out of the park; its offset was committed when it parked
    consumed_at: float = 0.0  # monotonic, for the linger deadline
    on_done: Done | None = None  # completes the offset (live records)
    expired: str | None = None  # parked too long: dead-letter as unattributable, this reason
    creation_waited: bool = False  # waited its whole time for the deal's creation time
    # Released work: the deal's creation time as another parked event of the deal named it.
    deal_created_at: datetime | None = None
    parked_id: str | None = None  # the event id it was parked under
    started: bool = False
    attempts: int = 0  # failed attempts so far (store, broker, or the record's own handling)
    failures: int = 0  # of those, times handling this record itself raised
    claim_waits: int = 0  # times the deal was being updated by someone else

    # -- what the event needs --------------------------------------------------------------
    claim: str | None = None  # deal id whose claim this work holds
    epoch: int | None = None  # that claim's epoch: the fence of what the work writes
    contact: tuple[str, str] | None = None  # (client, fingerprint) awaiting Metrica's ack
    order: dict[str, Any] | None = None  # rendered order record to send after the contact
    intent: UploadIntent | None = None  # an earlier run's upload that may have carried it

    # -- what it writes when done ----------------------------------------------------------
    ledger: LedgerEntry | None = None
    outcome: Outcome | None = None  # for metrics; duplicates have an outcome but no ledger entry
    detail: str = ""
    order_state: OrderState | None = None
    contact_uploaded: tuple[str, str] | None = None  # (client, fingerprint) Metrica holds
    park: ParkedEvent | None = None
    unpark: bool = False
    unlease: bool = False
    ack: Ack | None = None

    @property
    def tp(self) -> TopicPartition:
        """Released work belongs to no partition: it is drained on stop, never on revocation."""
        return (self.source.topic, -1 if self.released else self.source.partition)

    @property
    def event_id(self) -> str | None:
        return self.event.event_id if self.event is not None else self.parked_id

    @property
    def ledger_id(self) -> str:
        """A record without a readable event id is recorded by its position, so a redelivery
        after a crash does not dead-letter it a second time."""
        if self.event is not None:
            return self.event.event_id
        if self.parked_id is not None:
            return self.parked_id
        source = self.source
        return f"@{source.topic}:{source.partition}:{source.offset}"

    def log_fields(self) -> dict[str, Any]:
        source = self.source
        return {
            "event_id": self.event_id,
            "topic": source.topic,
            "partition": source.partition,
            "offset": source.offset,
        }

    def parked(self, client: str, deal: str, version: int | None, waits_for: str) -> ParkedEvent:
        """This event as it waits in the park for ``waits_for`` (an identity, a creation time)."""
        source, event = self.source, self.event
        assert event is not None
        return ParkedEvent(
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

    def reset(self) -> None:
        """Back to the start (a retry after an infrastructure failure)."""
        self.claim = self.epoch = self.contact = self.order = self.intent = None
        self.ledger = self.outcome = self.order_state = self.contact_uploaded = None
        self.park = self.ack = None
        self.unpark = self.unlease = False
        self.detail = ""


def _created(event: Event) -> datetime | None:
    """The deal's creation time as the event tells it (a lead opening a deal creates it)."""
    if isinstance(event, LeadCreated):
        return event.occurred_at if event.deal_id is not None else None
    return event.deal_created_at


def parked_source(parked: ParkedEvent) -> SourceRecord:
    """The record a parked event came from, as it is handled again."""
    return SourceRecord(
        topic=parked.topic,
        partition=parked.partition,
        offset=parked.offset,
        key=parked.key,
        value=parked.value,
        headers=parked.headers,
        timestamp_ms=parked.timestamp_ms,
    )
