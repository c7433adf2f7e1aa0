"""Issue 16: hostile but schema-valid records through the whole engine (real SQLite store, the
sandbox, the DLQ on the embedded broker). Every record ends with exactly one outcome, and one
record's trouble never holds the valid record behind it on the same partition."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.engine import pipeline as engine_module
from metrica_bridge.engine.pipeline import MAX_RECORD_FAILURES
from metrica_bridge.events import DealStatusChanged, EventKind
from metrica_bridge.outcomes import Outcome
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.steps import order_rules
from metrica_bridge.steps.dlq import REPLAY_COUNT
from tests.support import crm
from tests.support.engine import CODEC, Engine, running_engine
from tests.support.kafka import TopicFactory, consume_all

PAYMENT = "crm.events.PaymentReceived"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
LAST_HOURS = datetime(9999, 12, 31, 22, 0, tzinfo=UTC)  # OverflowError in Europe/Moscow
FAR = datetime(3000, 1, 1, tzinfo=UTC)
TOP = Decimal("9999999999999999.99")  # the largest amount decimal(18, 2) carries
TOPICS = {kind.value: kind for kind in EventKind}


@pytest.fixture
async def engine(
    bootstrap: str, topics: TopicFactory, sandbox: SandboxServer, tmp_path: Path
) -> AsyncIterator[Engine]:
    async with running_engine(bootstrap, topics, sandbox, tmp_path) as engine:
        yield engine


# -- records -----------------------------------------------------------------------------------
def _lead(event_id: str, lead: str, client: str, **changes: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "occurred_at": T0,
        "lead_id": lead,
        "deal_id": None,
        "client": {"uniq_id": client, "name": None, "phones": [], "emails": []},
        "metrica_client_id": str(10**18 + abs(hash(client)) % 10**17),
        "yclid": None,
        "utm": None,
        "consent": True,
        **changes,
    }


def _status(event_id: str, deal: str, client: str, **changes: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "occurred_at": T0,
        "deal_id": deal,
        "client_uniq_id": client,
        "deal_created_at": T0 - timedelta(minutes=5),
        "status": "qualified",
        "revenue": None,
        "cost": None,
        "currency": None,
        "products": [],
        "version": None,
        **changes,
    }


def _payment(event_id: str, deal: str, client: str, **changes: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "occurred_at": T0,
        "payment_id": f"P-{event_id}",
        "deal_id": deal,
        "client_uniq_id": client,
        "amount": Decimal("500.00"),
        "currency": "RUB",
        "deal_created_at": T0 - timedelta(minutes=5),
        **changes,
    }


SCHEMAS = {
    EventKind.LEAD_CREATED: (crm.LEAD, "lead_created.avsc", _lead),
    EventKind.DEAL_STATUS_CHANGED: (crm.DEAL, "deal_status_changed.avsc", _status),
    EventKind.PAYMENT_RECEIVED: (PAYMENT, "payment_received.avsc", _payment),
}


def _wide(schema_name: str, file: str, record: dict[str, Any]) -> bytes:
    """Encoded with the current schema's fingerprint, but its decimals written past the declared
    precision (a writer that does not check it, as fastavro's reader does not)."""
    header = CODEC.encode(schema_name, {**record, **_small_amounts(record)})[:10]
    text = (
        (PROJECT_ROOT / "schemas" / file).read_text().replace('"precision": 18', '"precision": 38')
    )
    out = BytesIO(header)
    out.seek(len(header))
    schemaless_writer(out, parse_schema(json.loads(text)), record)
    return out.getvalue()


def _small_amounts(record: dict[str, Any]) -> dict[str, Any]:
    return {k: Decimal("1.00") for k in ("amount", "revenue", "cost") if record.get(k) is not None}


TEXTS = st.one_of(
    st.sampled_from(["a\x00b", "\x00", "tab\there", "\x1b[31m", "\u0085", "\x7f", "é" * 5_000]),
    st.text(max_size=12),
)
TIMES = st.sampled_from([LAST_HOURS, FAR, datetime(1970, 1, 1, tzinfo=UTC), T0])
AMOUNTS = st.sampled_from([TOP, Decimal("0.00"), Decimal("10") ** 20, Decimal("0.01")])
CURRENCIES = st.sampled_from(["NEW", "new", "XXX", "usd", "ABC", "RUB"])
HEADERS = st.lists(
    st.tuples(
        st.sampled_from([REPLAY_COUNT, "dlq.attempts", "dlq.original.partition", "x-crm"]),
        st.one_of(
            st.sampled_from(["²".encode(), "١٢".encode(), b"9" * 10_000, b"\xff\xfe", b"-1", b"1"]),
            st.binary(max_size=8),
        ),
    ),
    max_size=3,
).map(tuple)


@st.composite
def hostile(draw: st.DrawFn) -> tuple[EventKind, str, dict[str, Any], bool, tuple[Any, ...]]:
    """(kind, entity id, record, keyed, headers): one field or two made hostile."""
    kind = draw(st.sampled_from(list(EventKind)))
    make = SCHEMAS[kind][2]
    entity = f"H{next(_IDS)}"
    client = draw(st.sampled_from(["C-known", f"C-{entity}"]))
    record = make(f"ev-{entity}", entity, client)
    strings = [k for k, v in record.items() if isinstance(v, str)]
    changes: dict[str, Any] = {}
    for _ in range(draw(st.integers(1, 2))):
        what = draw(st.sampled_from(["text", "time", "amount", "currency", "none"]))
        if what == "text":
            changes[draw(st.sampled_from(strings))] = draw(TEXTS)
        elif what == "time":
            changes[draw(st.sampled_from([k for k in record if k.endswith("_at")]))] = draw(TIMES)
        elif what == "amount" and kind is not EventKind.LEAD_CREATED:
            changes["amount" if kind is EventKind.PAYMENT_RECEIVED else "revenue"] = draw(AMOUNTS)
        elif what == "currency" and kind is not EventKind.LEAD_CREATED:
            changes["currency"] = draw(CURRENCIES)
    record.update(changes)
    keyed = draw(st.booleans())
    return kind, entity, record, keyed, draw(HEADERS)


_IDS = itertools.count()


def _value(kind: EventKind, record: dict[str, Any]) -> bytes:
    schema_name, file, _ = SCHEMAS[kind]
    amounts = [record.get(k) for k in ("amount", "revenue", "cost")]
    if any(a is not None and a > TOP for a in amounts):
        return _wide(schema_name, file, record)
    return CODEC.encode(schema_name, record)


# -- tests -------------------------------------------------------------------------------------
async def _known_client(engine: Engine) -> None:
    """A client with a ClientID, so order events of it go all the way to Metrica."""
    if "lead-known" not in engine.ledger():
        lead = _lead("lead-known", "L-known", "C-known")
        engine.feed("lead-created", b"L-known", CODEC.encode(crm.LEAD, lead))
        await engine.settle(len(engine.done) + 1)


async def test_a_superscript_replay_count_does_not_wedge_the_round(engine: Engine) -> None:
    """``"²".isdigit()`` is true and ``int("²")`` raises: that used to fail the round start and
    leave every event of the round in flight forever, with no outcome and no commit."""
    await _known_client(engine)
    odd = ((REPLAY_COUNT, "²".encode()),)
    status = CODEC.encode(crm.DEAL, _status("status-odd", "D1", "C-known"))
    engine.feed("deal-status-changed", b"D1", status, headers=odd)
    engine.feed(
        "deal-status-changed", b"D2", CODEC.encode(crm.DEAL, _status("s-2", "D2", "C-known"))
    )
    await engine.settle(3, within_s=15)
    ledger = engine.ledger()
    assert ledger["status-odd"][0] == "delivered"  # not a replay: an ordinary event
    assert ledger["s-2"][0] == "delivered"


async def test_a_record_that_keeps_failing_ends_as_invalid_event(
    engine: Engine, bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16, items 2 and 17: a record whose handling raises every time is not retried
    forever; after MAX_RECORD_FAILURES attempts it is dead-lettered with the real attempt count,
    and the next event of its deal goes on."""
    await _known_client(engine)
    monkeypatch.setattr(engine_module, "RETRY_INFRA_S", (0.01,))
    real = order_rules.on_status

    def on_status(order: Any, event: DealStatusChanged, *args: Any) -> order_rules.Verdict:
        if event.event_id == "status-bad":
            raise OverflowError("date value out of range")
        return real(order, event, *args)

    monkeypatch.setattr(order_rules, "on_status", on_status)
    start = len(engine.done)
    bad = _status("status-bad", "D1", "C-known")
    engine.feed("deal-status-changed", b"D1", CODEC.encode(crm.DEAL, bad))
    later = _status("status-later", "D1", "C-known", occurred_at=T0 + timedelta(minutes=1))
    engine.feed("deal-status-changed", b"D1", CODEC.encode(crm.DEAL, later))
    await engine.settle(start + 2, within_s=15)
    ledger = engine.ledger()
    assert ledger["status-bad"][:2] == ("dead_lettered", "invalid_event")
    assert ledger["status-later"][0] == "delivered"
    [dead] = consume_all(bootstrap, f"{engine.topics['deal-status-changed']}.dlq", 1)
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers["dlq.attempts"] == str(MAX_RECORD_FAILURES)
    assert headers["dlq.error.message"] == (
        f"handling failed {MAX_RECORD_FAILURES} times: OverflowError"
    )


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(records=st.lists(hostile(), min_size=1, max_size=3))
async def test_hostile_records_end_once_and_never_hold_the_next(
    engine: Engine, records: list[tuple[EventKind, str, dict[str, Any], bool, tuple[Any, ...]]]
) -> None:
    await _known_client(engine)  # once: the engine lives for the whole test
    fed: list[tuple[str, int]] = []
    for kind, entity, record, keyed, headers in records:
        key = entity.encode() if keyed else None
        fed.append(engine.feed(kind.value, key, _value(kind, record), headers=headers))
    # A valid record behind them on every partition they used (one partition per topic here).
    behind: list[tuple[str, int, str]] = []
    for kind in dict.fromkeys(kind for kind, *_ in records):
        schema_name, _, make = SCHEMAS[kind]
        entity = f"V{next(_IDS)}"
        event_id = f"ok-{entity}"
        record = make(event_id, entity, "C-known")
        topic, offset = engine.feed(kind.value, entity.encode(), CODEC.encode(schema_name, record))
        behind.append((topic, offset, event_id))
    total = sum(engine.offsets.values())
    await engine.settle(total, within_s=20)

    handled = Counter((w.source.topic, w.source.offset) for w in engine.done)
    assert all(n == 1 for n in handled.values()), "a record completed twice"
    assert set(fed) <= handled.keys()
    outcomes = {(w.source.topic, w.source.offset): w.outcome for w in engine.done}
    for position in fed:
        assert outcomes[position] in set(Outcome), position
    ledger = engine.ledger()
    for topic, offset, event_id in behind:
        assert (topic, offset) in handled
        assert ledger[event_id][0] == "delivered", ledger.get(event_id)
