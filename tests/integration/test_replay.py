"""Replaying a topic from offset 0 into a warm store (a new consumer group, the same store) sends
nothing new: every event is found in the ledger and counted as a duplicate."""

from __future__ import annotations

from pathlib import Path

from metrica_bridge.sandbox import SandboxServer
from tests.support import mixed
from tests.support.kafka import TopicFactory, unique_name
from tests.support.observe import metric, outcomes, parked_count
from tests.support.stack import COUNTER, ServiceProcess, service_env, wait_until

PROCESSED = "metrica_bridge_events_processed_total"


def test_replaying_every_topic_from_offset_zero_into_a_warm_store_sends_nothing(
    bootstrap: str,
    topics: TopicFactory,
    sandbox: SandboxServer,
    status_map: Path,
    tmp_path: Path,
) -> None:
    stream = mixed.build(25, updates=4, seed=5)
    records = len(stream.leads) + len(stream.statuses) + len(stream.payments)
    names = topics.crm_topics(3)
    store_url = f"sqlite:///{tmp_path / 'state.db'}"
    env = service_env(
        bootstrap=bootstrap,
        sandbox_url=sandbox.url,
        store_url=store_url,
        topics=names,
        status_map=status_map,
        batch_linger_ms=50,
    )
    mixed.produce(bootstrap, names["lead-created"], stream.leads)
    mixed.produce(bootstrap, names["deal-status-changed"], stream.statuses)
    mixed.produce(bootstrap, names["payment-received"], stream.payments)
    ids = stream.event_ids()

    first = ServiceProcess(env, tmp_path / "first.log").start()
    try:
        wait_until(
            lambda: len(outcomes(store_url, ids)) == len(ids) and parked_count(store_url) == 0,
            60,
            "an outcome for every event",
        )
    finally:
        assert first.terminate() == 0, first.logs()[-3000:]
    ledger = outcomes(store_url, ids)
    orders = sandbox.orders(COUNTER)
    uploads = len(sandbox.uploads(COUNTER))
    assert len(orders) == 25
    assert "delivered" in ledger.values()

    # Same store, new consumer groups: every topic is read again from offset 0.
    replay_env = {**env, "CONSUMER_GROUP_PREFIX": unique_name("mb-replay")}
    second = ServiceProcess(replay_env, tmp_path / "second.log").start()
    try:
        wait_until(
            lambda: metric(second.metrics_port, PROCESSED, outcome="duplicate") >= records,
            60,
            "every record counted as a duplicate",
        )
        # Anything else it would do (a send, a park) would show in the same counter.
        processed = metric(second.metrics_port, PROCESSED)
        duplicates = metric(second.metrics_port, PROCESSED, outcome="duplicate")
    finally:
        assert second.terminate() == 0, second.logs()[-3000:]
    assert duplicates == records
    assert processed == records
    assert len(sandbox.uploads(COUNTER)) == uploads
    assert sandbox.orders(COUNTER) == orders
    assert outcomes(store_url, ids) == ledger
