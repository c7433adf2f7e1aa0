"""The parse step alone: one record in, an event or a poison verdict out; only the registry's
outage escapes, to be retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from metrica_bridge.codec import Codec, SchemaUnavailable
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.events import EventKind, PaymentReceived
from metrica_bridge.kafka.record import SourceRecord
from metrica_bridge.outcomes import ErrorClass
from metrica_bridge.steps.parse import parse

CODEC = Codec.from_dir(PROJECT_ROOT / "schemas")
PAYMENT = "crm.events.PaymentReceived"
KINDS = {"payments": EventKind.PAYMENT_RECEIVED, "leads": EventKind.LEAD_CREATED}
NOW = datetime.now(UTC).replace(microsecond=0)


def _value(**changes: Any) -> bytes:
    record: dict[str, Any] = {
        "event_id": "p-1",
        "occurred_at": NOW - timedelta(hours=1),
        "payment_id": "P1",
        "deal_id": "D1",
        "client_uniq_id": "C1",
        "amount": Decimal("10.00"),
        "currency": "RUB",
        "deal_created_at": None,
    }
    record.update(changes)
    return CODEC.encode(PAYMENT, record)


def _source(value: bytes, topic: str = "payments", key: bytes | None = b"D1") -> SourceRecord:
    return SourceRecord(topic, 0, 0, key, value, (), None)


def test_a_valid_record_is_its_event() -> None:
    event = parse(CODEC, KINDS, _source(_value()))
    assert isinstance(event, PaymentReceived)
    assert (event.event_id, event.amount) == ("p-1", Decimal("10.00"))


@pytest.mark.parametrize(
    ("source", "error_class", "reason"),
    [
        (_source(b"\x00garbage"), ErrorClass.DECODE_ERROR, ""),
        (_source(_value(amount=Decimal("-1.00"))), ErrorClass.INVALID_EVENT, "amount"),
        (_source(_value(), topic="leads"), ErrorClass.INVALID_EVENT, "lead-created topic"),
        (_source(_value(), key=None), ErrorClass.INVALID_EVENT, "no key"),
        (_source(_value(), key=b"D2"), ErrorClass.INVALID_EVENT, "does not match"),
        (
            _source(_value(occurred_at=datetime(3000, 1, 1, tzinfo=UTC))),
            ErrorClass.INVALID_EVENT,
            "",
        ),
    ],
    ids=["undecodable", "negative", "wrong-topic", "no-key", "other-key", "far-future"],
)
def test_bad_records_are_verdicts_not_exceptions(
    source: SourceRecord, error_class: ErrorClass, reason: str
) -> None:
    verdict = parse(CODEC, KINDS, source)
    assert isinstance(verdict, tuple)
    assert verdict[0] is error_class
    assert reason in verdict[1]


def test_the_registrys_outage_escapes_to_be_retried() -> None:
    class RegistryDown:
        def decode(self, value: bytes) -> Any:
            raise SchemaUnavailable("schema registry unreachable")

    with pytest.raises(SchemaUnavailable):
        parse(RegistryDown(), KINDS, _source(_value()))  # type: ignore[arg-type]
