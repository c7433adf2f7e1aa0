"""Poison messages: what a broken producer or a confused CRM puts on the topics.

Each kind has one expected DLQ class (DESIGN.md §5):

* ``garbage`` — random bytes (never starting with a known magic byte) → ``decode_error``;
* ``truncated`` — a valid encoding cut short (Avro is prefix-free, so it never decodes)
  → ``decode_error``;
* ``empty_event_id`` — a valid record with ``event_id = ""`` → ``invalid_event``;
* ``negative_amount`` — a payment of a negative amount → ``invalid_event``;
* ``wrong_type`` — a valid record of another event type on the topic → ``invalid_event``;
* hostile but decodable values (issue 16), each → ``invalid_event``: ``null_key`` (a valid
  record without a key), ``control_chars`` (U+0000 in a lead's client name), ``far_future``
  (a status change dated in the year 3000), ``oversized_text`` (a 5,000-character name).

Poison uses entities of its own (ids with an ``X``), so it never touches the expected state of
the well-formed stream.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from metrica_bridge.codec import WireFormat
from metrica_bridge.simulate.model import (
    DEAL,
    LEAD,
    PAYMENT,
    Fate,
    SimulatedMessage,
    money,
    to_datetime,
)

if TYPE_CHECKING:
    from metrica_bridge.simulate.model import _Generator

POISON_WEIGHTS: dict[str, int] = {
    "garbage": 25,
    "truncated": 25,
    "empty_event_id": 20,
    "negative_amount": 15,
    "wrong_type": 15,
    "null_key": 10,
    "control_chars": 10,
    "far_future": 10,
    "oversized_text": 10,
}
FAR_FUTURE = datetime(3000, 1, 1, tzinfo=UTC)
HOSTILE = frozenset({"null_key", "control_chars", "far_future", "oversized_text"})
_NOT_MAGIC = [b for b in range(256) if b not in (0x00, 0xC3)]
_HEADER_BYTES = {WireFormat.SINGLE_OBJECT: 10, WireFormat.CONFLUENT: 5}


class PoisonMaker:
    def __init__(self, generator: _Generator) -> None:
        self.gen = generator
        self.rng = generator.rng
        self.deck = [kind for kind, weight in POISON_WEIGHTS.items() for _ in range(weight)]
        self.made = 0

    def make(self) -> SimulatedMessage:
        self.made += 1
        kind = self.rng.pick(self.deck)
        if kind == "garbage":
            return self.garbage()
        if kind == "truncated":
            return self.truncated()
        if kind == "empty_event_id":
            schema = self.rng.pick((LEAD, DEAL))
            return self.invalid(schema, schema, kind, event_id="")
        if kind == "negative_amount":
            return self.invalid(PAYMENT, PAYMENT, kind, amount_cents=-self.rng.between(1, 10**6))
        if kind in HOSTILE:
            return self.hostile(kind)
        on_topic = self.rng.pick((LEAD, DEAL, PAYMENT))
        written = self.rng.pick([s for s in (LEAD, DEAL, PAYMENT) if s != on_topic])
        return self.invalid(written, on_topic, kind)

    def ids(self) -> tuple[str, str, str, str]:
        p, n = self.gen.prefix, self.made
        return f"L-{p}-X{n:06d}", f"D-{p}-X{n:06d}", f"P-{p}-X{n:06d}", f"C-{p}-X{n:06d}"

    def record(self, schema: str, event_id: str, amount_cents: int) -> tuple[dict[str, Any], str]:
        """A well-formed record of ``schema`` for a poison entity, and its Kafka key."""
        lead_id, deal_id, payment_id, client = self.ids()
        at = to_datetime(self.gen.clock_ms)
        if schema == LEAD:
            return {
                "event_id": event_id,
                "occurred_at": at,
                "lead_id": lead_id,
                "deal_id": None,
                "client": {"uniq_id": client, "name": None, "phones": [], "emails": []},
                "metrica_client_id": None,
                "yclid": None,
                "utm": None,
                "consent": True,
            }, lead_id
        if schema == DEAL:
            return {
                "event_id": event_id,
                "occurred_at": at,
                "deal_id": deal_id,
                "client_uniq_id": client,
                "deal_created_at": at,
                "status": "new",
                "revenue": None,
                "cost": None,
                "currency": None,
                "products": [],
                "version": 1,
            }, deal_id
        return {
            "event_id": event_id,
            "occurred_at": at,
            "payment_id": payment_id,
            "deal_id": deal_id,
            "client_uniq_id": client,
            "amount": money(amount_cents),
            "currency": "RUB",
            "deal_created_at": None,
        }, deal_id

    def encode(self, schema: str, record: dict[str, Any]) -> bytes:
        return self.gen.codec.encode(schema, record, self.gen.config.wire)

    def hostile(self, kind: str) -> SimulatedMessage:
        schema = DEAL if kind in ("far_future", "null_key") else LEAD
        record, key = self.record(schema, self.gen.event_id(), 10_000)
        if kind == "far_future":
            record["occurred_at"] = FAR_FUTURE
        elif kind == "control_chars":
            record["client"]["name"] = "Ivan\x00Petrov"
        elif kind == "oversized_text":
            record["client"]["name"] = "Я" * 5_000
        return SimulatedMessage(
            self.gen.topics[schema],
            None if kind == "null_key" else key.encode(),
            self.encode(schema, record),
            record["event_id"],
            schema.rsplit(".", 1)[1],
            Fate.INVALID_EVENT,
            poison=kind,
        )

    def garbage(self) -> SimulatedMessage:
        rng = self.rng
        size = rng.between(1, 64)
        first = rng.pick(_NOT_MAGIC)
        value = bytes([first]) + rng.randbytes(size)
        key = None if rng.random() < 0.5 else f"junk-{self.gen.prefix}-{self.made}".encode()
        topic = self.gen.topics[rng.pick((LEAD, DEAL, PAYMENT))]
        return SimulatedMessage(topic, key, value, None, None, Fate.DECODE_ERROR, poison="garbage")

    def truncated(self) -> SimulatedMessage:
        schema = self.rng.pick((LEAD, DEAL, PAYMENT))
        record, key = self.record(schema, self.gen.event_id(), 10_000)
        value = self.encode(schema, record)
        header = _HEADER_BYTES[self.gen.config.wire]
        cut = self.rng.between(header, len(value))  # keep the header, lose at least one byte
        return SimulatedMessage(
            self.gen.topics[schema],
            key.encode(),
            value[:cut],
            None,
            schema.rsplit(".", 1)[1],
            Fate.DECODE_ERROR,
            poison="truncated",
        )

    def invalid(
        self,
        schema: str,
        on_topic_of: str,
        kind: str,
        *,
        event_id: str | None = None,
        amount_cents: int = 10_000,
    ) -> SimulatedMessage:
        record, key = self.record(
            schema, self.gen.event_id() if event_id is None else event_id, amount_cents
        )
        return SimulatedMessage(
            self.gen.topics[on_topic_of],
            key.encode(),
            self.encode(schema, record),
            record["event_id"],
            schema.rsplit(".", 1)[1],
            Fate.INVALID_EVENT,
            poison=kind,
        )
