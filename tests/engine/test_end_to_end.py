"""A simulated stream of several thousand events, with duplicates, late events and poison,
end to end through the real service into the sandbox."""

from __future__ import annotations

import sqlite3
from collections import Counter
from decimal import Decimal
from pathlib import Path

from metrica_bridge.codec import Codec
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.events import EventKind
from metrica_bridge.kafka.producer import Producer
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.simulate import SimulationConfig, generate, produce
from tests.support.kafka import TopicFactory, consume_all
from tests.support.mixed import status_steps
from tests.support.oracle import expect, is_subsequence
from tests.support.stack import COUNTER, ServiceProcess, service_env, wait_until

EVENTS = 4_000
CODEC = Codec.from_dir(PROJECT_ROOT / "schemas")


def test_simulated_stream_ends_in_the_expected_metrica_state(
    bootstrap: str, topics: TopicFactory, sandbox: SandboxServer, tmp_path: Path, status_map: Path
) -> None:
    names = topics.crm_topics(3)
    dlqs = {topic: f"{topic}.dlq" for topic in names.values()}
    config = SimulationConfig(
        count=EVENTS,
        seed=21,
        duplicates=0.03,
        late=0.05,
        poison=0.02,
        topics={EventKind(k): v for k, v in names.items()},
    )
    messages = list(generate(config, CODEC))
    expected = expect(messages)
    db = tmp_path / "state.db"
    env = service_env(
        bootstrap=bootstrap,
        sandbox_url=sandbox.url,
        store_url=f"sqlite:///{db}",
        topics=names,
        status_map=status_map,
        park_max_wait_s=15,
    )
    with Producer({"bootstrap.servers": bootstrap}) as producer:
        produce(messages, producer)
    must_wait = {e for d in expected.unattributable() for e in expected.deals[d].event_ids}
    may_wait = must_wait | {
        e for d in set(expected.deals) - expected.certain() for e in expected.deals[d].event_ids
    }
    dlq_expected = sum(sum(c.values()) for c in expected.poison.values()) + len(must_wait)
    service = ServiceProcess(env, tmp_path / "service.log").start()
    try:
        wait_until(
            lambda: _ledger_count(db) >= len(expected.event_ids) and _parked(db) == 0,
            150,
            "every event recorded",
            poll=1.0,
        )
        dlq = consume_all(bootstrap, list(dlqs.values()), dlq_expected, timeout=30)
    finally:
        assert service.terminate() == 0, service.logs()[-3000:]
    orders = {o["id"]: o for o in sandbox.orders(COUNTER)}

    # Every poison message is in its topic's DLQ, with the headers, key and value untouched.
    got_poison: Counter[tuple[str, str]] = Counter()
    unattributable: set[str] = set()
    for record in dlq:
        headers = {k: v.decode() for k, v in record.headers}
        if headers["dlq.error.class"] == "unattributable":
            unattributable.add(_event_id(record.value))
        assert headers["dlq.original.topic"] == record.topic.removesuffix(".dlq")
        for name in (
            "dlq.original.partition",
            "dlq.original.offset",
            "dlq.failed.at",
            "dlq.attempts",
        ):
            assert headers[name]
        got_poison[(headers["dlq.original.topic"], headers["dlq.error.class"])] += 1
    for topic, classes in expected.poison.items():
        for error_class, count in classes.items():
            assert got_poison[(topic, error_class)] == count, (topic, error_class)
    # Orders of clients without any identifier waited, then went to the DLQ; nothing else did.
    assert must_wait <= unattributable <= may_wait

    # Every event has exactly one recorded outcome.
    assert _ledger_count(db) == len(expected.event_ids)

    # Metrica holds exactly the deals it should, each with the right final status.
    assert set(orders) & expected.certain() == expected.in_metrica()
    wrong_final = [
        d for d in expected.in_metrica() if orders[d]["order_status"] != expected.deals[d].final()
    ]
    assert not wrong_final, [
        (d, orders[d]["order_status"], expected.deals[d].ordered()) for d in wrong_final[:5]
    ]
    # No history ever goes backwards, and nothing was delivered twice.
    for deal_id, order in orders.items():
        history = [h["order_status"] for h in order["history"]]
        deal = expected.deals[deal_id]
        assert is_subsequence(status_steps(history), deal.ordered()), (
            deal_id,
            history,
            deal.ordered(),
        )
        assert len(history) <= len(deal.events)
        # Every revenue it showed is one its events lead to; it ends with the deal's (issue 16).
        revenues = deal.revenues(unattributable)
        shown = [_cents(h["revenue"]) for h in order["history"]]
        assert set(shown) <= revenues, (deal_id, shown, sorted(map(str, revenues - {None})))
    for deal_id in expected.in_metrica():
        want = expected.deals[deal_id].final_revenue()
        assert _cents(orders[deal_id].get("revenue")) == want, (deal_id, want)
    # Every identified client's contact holds every identifier its leads told.
    contacts = {c["uniq_id"]: c for c in sandbox.contacts(COUNTER)}
    for client in expected.identified - expected.uncertain:
        want_ids = expected.contacts[client].expected()
        got_ids = tuple({str(v) for v in contacts[client].get(f) or []} for f in IDENTIFIERS)
        assert got_ids == want_ids, client


IDENTIFIERS = ("client_ids", "phones", "emails")


def _cents(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(Decimal("0.01"))


def _event_id(value: bytes | None) -> str:
    assert value is not None
    decoded = CODEC.decode(value)
    return str(decoded.record["event_id"])


def _ledger_count(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            # Poison without a readable event id is ledgered by position ("@topic:partition:offset").
            query = "SELECT count(*) FROM ledger WHERE event_id NOT LIKE '@%'"
            return int(conn.execute(query).fetchone()[0])
    except sqlite3.Error:
        return 0


def _parked(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM parked").fetchone()[0])
    except sqlite3.Error:
        return -1
