"""A CRM outbox retry (the same event id, the same bytes), a no-op status change (same status and
revenue, a new event id) and a repeated payment (same payment id, a new event id) send nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from metrica_bridge.sandbox import SandboxServer
from tests.support import mixed
from tests.support.crm import DEAL, LEAD
from tests.support.kafka import TopicFactory
from tests.support.observe import metric, outcomes
from tests.support.stack import COUNTER, ServiceProcess, service_env, wait_until

CREATED = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
PROCESSED = "metrica_bridge_events_processed_total"


def _at(minutes: int) -> datetime:
    return CREATED + timedelta(minutes=minutes)


def _status(event_id: str, minutes: int, status: str, revenue: str) -> tuple[str, bytes, str]:
    record = mixed.status_record(
        event_id,
        "D1",
        "C1",
        CREATED,
        _at(minutes),
        status,
        revenue=Decimal(revenue),
        version=minutes,
    )
    return ("D1", mixed.CODEC.encode(DEAL, record), event_id)


def _payment(event_id: str, payment_id: str, minutes: int, amount: str) -> tuple[str, bytes, str]:
    record = mixed.payment_record(
        event_id, payment_id, "D2", "C2", CREATED, _at(minutes), Decimal(amount)
    )
    return ("D2", mixed.CODEC.encode(mixed.PAYMENT, record), event_id)


def test_retries_no_ops_and_repeated_payments_upload_nothing(
    bootstrap: str,
    topics: TopicFactory,
    sandbox: SandboxServer,
    status_map: Path,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    names = topics.crm_topics(1)
    deal_topic, payment_topic = names["deal-status-changed"], names["payment-received"]
    env = service_env(
        bootstrap=bootstrap,
        sandbox_url=sandbox.url,
        store_url=postgres_url,
        topics=names,
        status_map=status_map,
        batch_linger_ms=50,
    )
    leads = [
        (
            f"L{n:05d}",
            mixed.CODEC.encode(LEAD, mixed.lead_record(n, deal, client, CREATED, cid)),
            f"lead-{n}",
        )
        for n, deal, client, cid in (
            (1, "D1", "C1", "1700000000000000001"),
            (2, "D2", "C2", "1700000000000000002"),
        )
    ]
    s1 = _status("s1", 1, "qualified", "100.00")
    pay_a = _payment("pay-a", "P1", 1, "50.00")
    service = ServiceProcess(env, tmp_path / "service.log").start()
    try:
        mixed.produce(bootstrap, names["lead-created"], leads)
        wait_until(lambda: len(sandbox.orders(COUNTER)) == 2, 30, "both orders created")
        mixed.produce(bootstrap, deal_topic, [s1])
        mixed.produce(bootstrap, payment_topic, [pay_a])
        wait_until(
            lambda: (
                outcomes(postgres_url, ["s1", "pay-a"]) == {"s1": "delivered", "pay-a": "delivered"}
            ),
            30,
            "the first updates delivered",
        )
        before = sandbox.uploads(COUNTER)
        # Each topic: the outbox retry, the no-op, then a real change that must go out (so we
        # know the ones before it were handled: one deal's events are handled in order).
        mixed.produce(
            bootstrap,
            deal_topic,
            [s1, _status("s2", 2, "qualified", "100.00"), _status("s3", 3, "won", "100.00")],
        )
        mixed.produce(
            bootstrap,
            payment_topic,
            [pay_a, _payment("pay-b", "P1", 2, "50.00"), _payment("pay-c", "P2", 3, "20.00")],
        )
        ids = ["s1", "s2", "s3", "pay-a", "pay-b", "pay-c"]
        wait_until(lambda: len(outcomes(postgres_url, ids)) == 6, 30, "every outcome recorded")
        duplicates = {
            topic: metric(service.metrics_port, PROCESSED, topic=topic, outcome="duplicate")
            for topic in (deal_topic, payment_topic)
        }
    finally:
        assert service.terminate() == 0, service.logs()[-3000:]

    assert outcomes(postgres_url, ids) == {
        "s1": "delivered",
        "s2": "skipped",
        "s3": "delivered",
        "pay-a": "delivered",
        "pay-b": "skipped",
        "pay-c": "delivered",
    }
    assert duplicates == {deal_topic: 1, payment_topic: 1}
    new = sandbox.uploads(COUNTER)[len(before) :]
    assert {u["endpoint"] for u in new} == {"orders"}
    assert sum(u["elements_count"] for u in new) == 2  # s3 and pay-c, nothing else
    orders = {o["id"]: o for o in sandbox.orders(COUNTER)}
    assert [h["order_status"] for h in orders["D1"]["history"]] == ["new", "qualified", "won"]
    assert [h["order_status"] for h in orders["D2"]["history"]] == ["new", "won", "won"]
    assert Decimal(str(orders["D1"]["revenue"])) == Decimal("100.00")
    assert Decimal(str(orders["D2"]["revenue"])) == Decimal("70.00")
