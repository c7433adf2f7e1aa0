"""The intake alone, without a broker or a store: records wait in their deal's lane until a round
takes them, are parsed only then, and partitions can be dropped or abandoned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from metrica_bridge.codec import Codec
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.engine.intake import Intake
from metrica_bridge.engine.work import Work
from metrica_bridge.events import EventKind
from metrica_bridge.kafka.record import SourceRecord
from metrica_bridge.outcomes import ErrorClass
from metrica_bridge.store.base import WAITS_IDENTITY, ParkedEvent

CODEC = Codec.from_dir(PROJECT_ROOT / "schemas")
PAYMENTS = "payments"
TOPICS = {EventKind.PAYMENT_RECEIVED: PAYMENTS}
NOW = datetime.now(UTC).replace(microsecond=0)


def _value(event_id: str, deal: str) -> bytes:
    record: dict[str, Any] = {
        "event_id": event_id,
        "occurred_at": NOW - timedelta(hours=1),
        "payment_id": f"P-{event_id}",
        "deal_id": deal,
        "client_uniq_id": "C1",
        "amount": Decimal("10.00"),
        "currency": "RUB",
        "deal_created_at": None,
    }
    return CODEC.encode("crm.events.PaymentReceived", record)


def _record(offset: int, deal: str, partition: int = 0, topic: str = PAYMENTS) -> SourceRecord:
    value = _value(f"e{offset}", deal)
    return SourceRecord(topic, partition, offset, deal.encode(), value, (), None)


def _intake(*records: SourceRecord) -> tuple[Intake, list[Work]]:
    intake, done = Intake(CODEC, TOPICS), list[Work]()
    intake.consume(records, done.append)
    return intake, done


def _offsets(works: list[Work]) -> list[int]:
    return [w.source.offset for w in works]


def test_one_event_of_a_deal_at_a_time_and_other_deals_beside_it() -> None:
    intake, _ = _intake(_record(0, "D1"), _record(1, "D1"), _record(2, "D2"))
    first = intake.take(10)
    assert _offsets(first) == [0, 2]
    assert intake.running() == 2
    assert intake.take(10) == []  # D1's second event waits for its first
    intake.done(first[0])
    assert _offsets(intake.take(10)) == [1]
    assert intake.running() == 2


def test_work_sent_back_waits_first_in_its_lane_for_its_delay() -> None:
    intake, _ = _intake(_record(0, "D1"), _record(1, "D1"))
    [work] = intake.take(10)
    intake.back(work, 0.0)
    assert intake.running() == 0
    assert intake.take(10) == [work]  # not the deal's next event
    intake.back(work, 60.0)
    assert intake.take(10) == []


async def test_records_are_parsed_only_when_a_round_takes_them() -> None:
    bad = SourceRecord(PAYMENTS, 0, 1, b"D2", b"\x00not avro", (), None)
    intake, _ = _intake(_record(0, "D1"), bad)
    taken = intake.take(10)
    assert all(w.event is None and w.poison is None for w in taken)
    ready = await intake.parse(taken, _unexpected, _unexpected)
    assert ready == taken
    assert ready[0].event is not None
    assert ready[0].event.event_id == "e0"
    assert ready[1].poison is not None
    assert ready[1].poison[0] is ErrorClass.DECODE_ERROR


async def test_a_record_whose_parsing_raises_is_left_out_and_the_rest_go_on() -> None:
    # A record of a topic the intake has no kind for: parsing it raises (a bug, in production).
    stray = _record(5, "D9", topic="elsewhere")
    intake, _ = _intake(_record(0, "D1"), stray, _record(1, "D2"))
    failed: list[tuple[Work, Exception]] = []
    ready = await intake.parse(intake.take(10), _unexpected, lambda w, exc: failed.append((w, exc)))
    assert _offsets(ready) == [0, 1]
    assert [(w.source.topic, type(exc)) for w, exc in failed] == [("elsewhere", KeyError)]


def test_a_revoked_partition_s_waiting_work_is_dropped_and_its_running_work_abandoned() -> None:
    intake, _ = _intake(_record(0, "D1", 0), _record(1, "D1", 0), _record(2, "D2", 1))
    running = intake.take(10)
    assert intake.busy({(PAYMENTS, 0)}) == 1
    assert intake.drop({(PAYMENTS, 0)}) == 1  # the second D1 event; the first is running
    assert intake.abandon({(PAYMENTS, 0)}) == 1
    assert running[0].on_done is None  # ends, records its outcome, completes no offset
    assert running[1].on_done is not None


def test_released_parked_events_are_counted_until_done_or_dropped() -> None:
    intake, _ = _intake()
    for n in (1, 2):
        parked = ParkedEvent(
            event_id=f"p{n}",
            topic=PAYMENTS,
            partition=0,
            offset=n,
            key=b"D1",
            value=_value(f"p{n}", "D1"),
            headers=(),
            client_uniq_id="C1",
            deal_id="D1",
            occurred_at=NOW,
            version=None,
            parked_at=NOW,
            waits_for=WAITS_IDENTITY,
        )
        intake.release(parked, intake.parse_parked(parked), None)
    assert intake.released_in_progress() == 2
    [first] = intake.take(10)  # one lane: the deal's
    assert first.released
    assert first.event is not None
    assert first.key == "deal:D1"
    intake.done(first)
    assert intake.released_in_progress() == 1
    assert intake.drop({(PAYMENTS, -1)}) == 1  # released events belong to no partition
    assert intake.released_in_progress() == 0


def _unexpected(work: Work, exc: Exception) -> None:
    raise AssertionError(f"{work.source.offset}: {exc!r}")
