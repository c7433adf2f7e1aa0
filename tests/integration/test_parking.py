"""Deal events of a client without any identifier wait in the park (their offsets commit) until
a lead brings the client's ClientID, or go to the DLQ as ``unattributable`` after
``PARK_MAX_WAIT_S``."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from metrica_bridge.kafka.producer import Producer
from metrica_bridge.sandbox import SandboxServer
from tests.support import mixed
from tests.support.crm import DEAL, LEAD
from tests.support.kafka import TopicFactory, consume_all
from tests.support.observe import metric, outcomes, parked_count
from tests.support.oracle import is_subsequence
from tests.support.stack import COUNTER, ServiceProcess, service_env, wait_until

CREATED = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
PROCESSED = "metrica_bridge_events_processed_total"


def _names(topics: TopicFactory) -> dict[str, str]:
    return topics.crm_topics(1)


def _status(event_id: str, deal: str, client: str, minutes: int, status: str) -> bytes:
    at = CREATED + timedelta(minutes=minutes)
    record = mixed.status_record(event_id, deal, client, CREATED, at, status, version=minutes)
    return mixed.CODEC.encode(DEAL, record)


def test_a_deal_event_waits_for_its_lead_and_goes_out_with_the_identity(
    bootstrap: str,
    topics: TopicFactory,
    sandbox: SandboxServer,
    status_map: Path,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    names = _names(topics)
    deal_topic = names["deal-status-changed"]
    env = service_env(
        bootstrap=bootstrap,
        sandbox_url=sandbox.url,
        store_url=postgres_url,
        topics=names,
        status_map=status_map,
        park_max_wait_s=60,
    )
    service = ServiceProcess(env, tmp_path / "service.log").start()
    try:
        # Two updates of a deal whose client nobody has identified yet: both park, in order.
        mixed.produce(
            bootstrap,
            deal_topic,
            [
                ("D1", _status("s1", "D1", "C1", 1, "qualified"), "s1"),
                ("D1", _status("s2", "D1", "C1", 2, "won"), "s2"),
            ],
        )
        wait_until(
            lambda: (
                metric(service.metrics_port, PROCESSED, topic=deal_topic, outcome="parked") == 2
            ),
            30,
            "both updates parked",
        )
        assert parked_count(postgres_url) == 2
        time.sleep(10)  # the lead comes 10 seconds later
        assert sandbox.orders(COUNTER) == []  # nothing went out without an identity
        lead = mixed.lead_record(1, "D1", "C1", CREATED, "1700000000123456789")
        mixed.produce(
            bootstrap, names["lead-created"], [("L00001", mixed.CODEC.encode(LEAD, lead), "lead-1")]
        )
        wait_until(
            lambda: len(outcomes(postgres_url, ["s1", "s2", "lead-1"])) == 3,
            30,
            "the parked updates released",
        )
    finally:
        assert service.terminate() == 0, service.logs()[-3000:]

    assert parked_count(postgres_url) == 0
    assert outcomes(postgres_url, ["s1", "s2"]) == {"s1": "delivered", "s2": "delivered"}
    [contact] = sandbox.contacts(COUNTER)
    assert contact["uniq_id"] == "C1"
    assert contact["client_ids"] == ["1700000000123456789"]
    [order] = sandbox.orders(COUNTER)
    assert (order["id"], order["client_uniq_id"], order["order_status"]) == ("D1", "C1", "won")
    history = [h["order_status"] for h in order["history"]]
    assert is_subsequence(history, ["new", "qualified", "won"]), history
    assert history[-2:] == ["qualified", "won"]
    # Metrica binds orders only through contacts uploaded first.
    uploads = sandbox.uploads(COUNTER)
    first_contact = next(i for i, u in enumerate(uploads) if u["endpoint"] == "contacts")
    first_order = next(i for i, u in enumerate(uploads) if u["endpoint"] == "orders")
    assert first_contact < first_order, uploads


def test_a_deal_event_that_never_gets_an_identity_is_dead_lettered_as_unattributable(
    bootstrap: str,
    topics: TopicFactory,
    sandbox: SandboxServer,
    status_map: Path,
    tmp_path: Path,
) -> None:
    names = _names(topics)
    deal_topic = names["deal-status-changed"]
    store_url = f"sqlite:///{tmp_path / 'state.db'}"
    env = service_env(
        bootstrap=bootstrap,
        sandbox_url=sandbox.url,
        store_url=store_url,
        topics=names,
        status_map=status_map,
        park_max_wait_s=5,
    )
    value = _status("orphan-1", "D9", "C9", 1, "qualified")
    headers = [("crm.trace", b"abc-123")]
    service = ServiceProcess(env, tmp_path / "service.log").start()
    try:
        with Producer({"bootstrap.servers": bootstrap}) as producer:
            producer.send(deal_topic, b"D9", value, headers)
            producer.flush()
        produced_at = time.time()
        wait_until(lambda: parked_count(store_url) == 1, 30, "the event parked")
        wait_until(
            lambda: outcomes(store_url, ["orphan-1"]) == {"orphan-1": "dead_lettered"},
            30,
            "the event dead-lettered",
        )
        [record] = consume_all(bootstrap, f"{deal_topic}.dlq", 1, timeout=15)
    finally:
        assert service.terminate() == 0, service.logs()[-3000:]

    assert parked_count(store_url) == 0
    assert sandbox.orders(COUNTER) == []
    assert (record.key, record.value) == (b"D9", value)
    got = {k: v.decode() for k, v in record.headers}
    assert got["crm.trace"] == "abc-123"  # the original headers are kept
    assert got["dlq.error.class"] == "unattributable"
    assert got["dlq.original.topic"] == deal_topic
    assert (got["dlq.original.partition"], got["dlq.original.offset"]) == ("0", "0")
    assert got["dlq.original.timestamp"]
    assert got["dlq.attempts"]
    assert got["dlq.replay.count"] == "0"
    assert got["dlq.error.message"]
    failed_at = datetime.fromisoformat(got["dlq.failed.at"].replace("Z", "+00:00"))
    # It waited the configured time before giving up.
    assert failed_at.timestamp() - produced_at >= 5 - 0.5
