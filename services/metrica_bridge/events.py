"""Typed CRM domain events (DESIGN.md §2), validated and normalised.

The codec turns bytes into plain Avro records (dicts); :func:`parse_event` turns such a record
into one of these models or raises :class:`InvalidEvent` with a reason that contains no personal
data. Identifiers are normalised on the way in (see :mod:`metrica_bridge.normalize`); values that
cannot be normalised are dropped and counted in ``dropped_identifiers`` rather than failing the
whole event, because a lead with one mistyped phone still carries a usable ClientID.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from metrica_bridge import normalize
from metrica_bridge.currencies import ISO_4217

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Hostile input (docs/decisions.md): C0 and C1 control characters (U+0000 among them, which
# PostgreSQL refuses in text) make no sense in any CRM string; the whole event is invalid.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_TEXT = 1_000  # characters in any string (identifiers are capped at 255 by NonEmpty)
MAX_ITEMS = 1_000  # phones, emails, products
DEFAULT_MAX_CLOCK_SKEW_S = 3_600.0
_max_skew = timedelta(seconds=DEFAULT_MAX_CLOCK_SKEW_S)

NonEmpty = Annotated[str, Field(min_length=1, max_length=255)]
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=2)]


class EventKind(StrEnum):
    LEAD_CREATED = "lead-created"
    DEAL_STATUS_CHANGED = "deal-status-changed"
    PAYMENT_RECEIVED = "payment-received"


class InvalidEvent(ValueError):
    """A decodable record that breaks the event contract. ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)


def set_max_clock_skew(seconds: float) -> None:
    """How far past this host's clock a time may be (``MAX_CLOCK_SKEW_S``); the service sets it
    once from its settings, before any event is parsed."""
    global _max_skew
    _max_skew = timedelta(seconds=seconds)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if value < _EPOCH:
        raise ValueError("timestamp before 1970")
    # A time from the future would make every later real event of the order stale forever.
    if value > datetime.now(UTC) + _max_skew:
        raise ValueError("timestamp later than now plus the allowed clock skew")
    return value


def _currency(value: str | None) -> str:
    code = (value or "RUB").strip().upper()
    if not _CURRENCY.match(code) or code not in ISO_4217:
        raise ValueError("currency is not an ISO 4217 code")
    return code


def _named_currency(value: str | None) -> str | None:
    """A status event's currency when it names one. Absent is not "RUB": applied as if it were
    news, a default would reset an order in another currency (issue 15)."""
    return None if value is None or not str(value).strip() else _currency(value)


class Client(_Model):
    uniq_id: NonEmpty
    name: str | None = None
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    dropped_identifiers: int = 0

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "dropped_identifiers" in data:
            return data
        raw_phones = [str(p) for p in data.get("phones") or []]
        raw_emails = [str(e) for e in data.get("emails") or []]
        phones = [p for p in map(normalize.phone, raw_phones) if p]
        emails = [e for e in map(normalize.email, raw_emails) if e]
        dropped = len(raw_phones) - len(phones) + len(raw_emails) - len(emails)
        return {
            **data,
            "phones": tuple(normalize.unique(phones)),
            "emails": tuple(normalize.unique(emails)),
            "dropped_identifiers": dropped,
        }


class Utm(_Model):
    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    content: str | None = None
    term: str | None = None


class Product(_Model):
    sku: NonEmpty
    quantity: int = Field(ge=0)


class _Event(_Model):
    kind: ClassVar[EventKind]
    schema_name: ClassVar[str]

    event_id: NonEmpty
    occurred_at: datetime

    _check_occurred_at = field_validator("occurred_at")(_utc)

    @property
    def key(self) -> str:
        """The Kafka key and the per-entity ordering key."""
        raise NotImplementedError


class LeadCreated(_Event):
    kind: ClassVar[EventKind] = EventKind.LEAD_CREATED
    schema_name: ClassVar[str] = "crm.events.LeadCreated"

    lead_id: NonEmpty
    deal_id: NonEmpty | None = None
    client: Client
    metrica_client_id: str | None = None
    yclid: str | None = None
    utm: Utm | None = None
    consent: bool = True
    dropped_client_ids: int = 0

    @model_validator(mode="before")
    @classmethod
    def _client_id(cls, data: Any) -> Any:
        # An unusable ClientID is dropped and counted, not fatal: the phones or emails may still
        # bind. A blank one is simply absent (the form's hidden field was never filled).
        if not isinstance(data, dict) or "dropped_client_ids" in data:
            return data
        raw = data.get("metrica_client_id")
        if raw is None or not str(raw).strip():
            return {**data, "metrica_client_id": None}
        value = normalize.client_id(str(raw))
        return {**data, "metrica_client_id": value, "dropped_client_ids": int(value is None)}

    @property
    def key(self) -> str:
        return self.lead_id

    @property
    def dropped_identifiers(self) -> int:
        """Phones, emails and ClientIDs dropped as unusable: count them, never log them."""
        return self.client.dropped_identifiers + self.dropped_client_ids

    @property
    def client_ids(self) -> tuple[str, ...]:
        return (self.metrica_client_id,) if self.metrica_client_id else ()


class DealStatusChanged(_Event):
    kind: ClassVar[EventKind] = EventKind.DEAL_STATUS_CHANGED
    schema_name: ClassVar[str] = "crm.events.DealStatusChanged"

    deal_id: NonEmpty
    client_uniq_id: NonEmpty
    deal_created_at: datetime
    status: NonEmpty
    revenue: Money | None = None
    cost: Money | None = None
    currency: str | None = None  # None: the event does not name one (the order keeps its own)
    products: tuple[Product, ...] = ()
    version: int | None = None

    _check_created = field_validator("deal_created_at")(_utc)
    _check_currency = field_validator("currency", mode="before")(_named_currency)

    @property
    def key(self) -> str:
        return self.deal_id


class PaymentReceived(_Event):
    kind: ClassVar[EventKind] = EventKind.PAYMENT_RECEIVED
    schema_name: ClassVar[str] = "crm.events.PaymentReceived"

    payment_id: NonEmpty
    deal_id: NonEmpty
    client_uniq_id: NonEmpty
    amount: Money
    currency: str = "RUB"
    deal_created_at: datetime | None = None

    _check_currency = field_validator("currency", mode="before")(_currency)

    @field_validator("deal_created_at")
    @classmethod
    def _created(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)

    @property
    def key(self) -> str:
        return self.deal_id


Event = LeadCreated | DealStatusChanged | PaymentReceived

EVENT_TYPES: dict[str, type[LeadCreated] | type[DealStatusChanged] | type[PaymentReceived]] = {
    cls.schema_name: cls for cls in (LeadCreated, DealStatusChanged, PaymentReceived)
}
EVENT_TYPES_BY_KIND = {cls.kind: cls for cls in EVENT_TYPES.values()}
SCHEMA_FILES: dict[str, str] = {
    "crm.events.LeadCreated": "lead_created.avsc",
    "crm.events.DealStatusChanged": "deal_status_changed.avsc",
    "crm.events.PaymentReceived": "payment_received.avsc",
}


def _hostile(value: Any, path: str, problems: list[str]) -> None:
    """Strings with control characters or beyond MAX_TEXT, arrays beyond MAX_ITEMS, anywhere in
    the decoded record (field locations only: the values may be personal data)."""
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            problems.append(f"{path}: string_too_long")
        if _CONTROL.search(value):
            problems.append(f"{path}: control_character")
    elif isinstance(value, dict):
        for key, item in value.items():
            _hostile(item, f"{path}.{key}" if path else str(key), problems)
    elif isinstance(value, list | tuple):
        if len(value) > MAX_ITEMS:
            problems.append(f"{path}: too_long")
            return
        for index, item in enumerate(value):
            _hostile(item, f"{path}.{index}", problems)


def parse_event(schema_name: str, record: dict[str, Any]) -> Event:
    """Validate a decoded Avro record against the event contract."""
    cls = EVENT_TYPES.get(schema_name)
    if cls is None:
        raise InvalidEvent(f"unknown record type {schema_name!r}")
    problems: list[str] = []
    _hostile(record, "", problems)
    if problems:
        raise InvalidEvent(f"{cls.__name__} violates the contract: {'; '.join(sorted(problems))}")
    try:
        return cls.model_validate(record)
    except ValidationError as exc:
        # Only field locations and error types: the input values may be personal data.
        problems = sorted({f"{'.'.join(map(str, e['loc']))}: {e['type']}" for e in exc.errors()})
        raise InvalidEvent(f"{cls.__name__} violates the contract: {'; '.join(problems)}") from None


def expected_kind(event: Event, kind: EventKind) -> Literal[True]:
    """Every topic carries one event type; a record of another type is an invalid event."""
    if event.kind is not kind:
        raise InvalidEvent(f"{event.kind.value} record on the {kind.value} topic")
    return True
