"""``/metrics`` scraped during and after a simulated stream through the real service: the counters
add up to the events produced, and every gauge an alert relies on ends where it should.

Accounting (docs/operations.md, "Reading the metrics"): every consumed record gets exactly one
final outcome (delivered, duplicate, stale, skipped, dead_lettered). ``parked`` is not final: a
parked event is counted once as parked and once more with its final outcome, after it was
released (``events_released_total``) or expired (``dlq_records_total{error_class=
"unattributable"}``). So, per topic,
``consumed == Σ final outcomes + (parked - released - unattributable)``, the bracket being the
events still waiting.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from metrica_bridge.codec import Codec
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.events import EventKind
from metrica_bridge.kafka.producer import Producer
from metrica_bridge.outcomes import ErrorClass, Outcome
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.simulate import Fate, SimulationConfig, generate, produce
from tests.ops.support import Scrape, get, scrape
from tests.support import crm
from tests.support.kafka import TopicFactory, consume_all
from tests.support.oracle import expect
from tests.support.stack import COUNTER, STATUS_MAP, TOKEN, ServiceProcess, service_env, wait_until

EVENTS = 800
PARTITIONS = 3
# Not a real day's 5,000: the service paces requests over what is left of the GMT day, so this
# run's length would depend on the hour CI starts it (about 12 s a request at 06:00). The gauge
# is checked against whatever budget is set.
BUDGET = 1_000_000
FINAL = [o.value for o in Outcome if o is not Outcome.PARKED]
CODEC = Codec.from_dir(PROJECT_ROOT / "schemas")


def _waiting(m: Scrape, topic: str) -> float:
    """Events of ``topic`` parked and neither released nor expired yet."""
    return (
        m.value("events_processed_total", topic=topic, outcome=Outcome.PARKED)
        - m.value("events_released_total", topic=topic)
        - m.value("dlq_records_total", topic=topic, error_class=ErrorClass.UNATTRIBUTABLE)
    )


def _finals(m: Scrape, topic: str) -> float:
    return sum(m.value("events_processed_total", topic=topic, outcome=o) for o in FINAL)


def _check_consistent(m: Scrape, previous: Scrape | None, produced: dict[str, int]) -> None:
    """What holds at every instant of a run, whatever the interleaving."""
    for topic, count in produced.items():
        consumed = m.value("events_consumed_total", topic=topic)
        assert consumed <= count, topic
        assert _finals(m, topic) <= consumed, topic
        assert _waiting(m, topic) >= 0, topic
        # The DLQ record is acknowledged before the outcome is recorded.
        assert m.value(
            "events_processed_total", topic=topic, outcome=Outcome.DEAD_LETTERED
        ) <= m.value("dlq_records_total", topic=topic)
    for endpoint in ("contacts", "orders"):
        # A request is counted when it returns, the upload's records when it is settled.
        assert m.value("upload_records_count", endpoint=endpoint) <= m.value(
            "metrica_requests_total", endpoint=endpoint, result="success"
        )
    if previous is not None:  # counters never go down
        for sample in previous.samples:
            if sample.name.endswith(("_total", "_count")):
                now = m.value(sample.name.removeprefix("metrica_bridge_"), **sample.labels)
                assert now >= sample.value, sample


def test_counters_add_up_to_the_events_produced(
    bootstrap: str, topics: TopicFactory, tmp_path: Path
) -> None:
    names = topics.many({kind.value: PARTITIONS for kind in EventKind})
    dlqs = [f"{topic}.dlq" for topic in names.values()]
    topics.created.extend(dlqs)
    config = SimulationConfig(
        count=EVENTS,
        seed=11,
        clients=200,
        duplicates=0.05,
        late=0.05,
        poison=0.03,
        topics={EventKind(k): v for k, v in names.items()},
    )
    messages = list(generate(config, CODEC))
    expected = expect(messages)
    produced = Counter(m.topic for m in messages)
    duplicates = Counter(m.topic for m in messages if m.fate is Fate.DUPLICATE)
    assert expected.unattributable(), "the stream should make some orders wait, then expire"
    poison = sum(sum(c.values()) for c in expected.poison.values())
    status_map = tmp_path / "status_map.yaml"
    status_map.write_text(STATUS_MAP)
    db = tmp_path / "state.db"
    started_at = time.time()

    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], port=0) as sandbox:
        crm.push_status_map(sandbox.url)
        env = service_env(
            bootstrap=bootstrap,
            sandbox_url=sandbox.url,
            store_url=f"sqlite:///{db}",
            topics=names,
            status_map=status_map,
            park_max_wait_s=4,
            metrica_daily_budget=BUDGET,
            kafka_statistics_interval_ms=500,  # lag from librdkafka statistics, refreshed often
        )
        service = ServiceProcess(env, tmp_path / "service.log").start()
        port = service.metrics_port
        try:
            wait_until(lambda: get(port, "/healthz")[0] == 200, 30, "/healthz answers 200")
            wait_until(lambda: get(port, "/readyz")[0] == 200, 60, "ready: partitions assigned")
            assert get(port, "/readyz") == (200, "ok\n")
            before = scrape(port)
            assert before is not None
            for topic in names.values():
                assert before.value("assigned_partitions", topic=topic) == PARTITIONS
                assert before.value("events_consumed_total", topic=topic) == 0

            with Producer({"bootstrap.servers": bootstrap}) as producer:
                produce(messages, producer)

            # During the run: scrape repeatedly; every scrape must be consistent.
            scrapes: list[Scrape] = [before]

            def settled() -> bool:
                m = scrape(port)
                assert m is not None, service.logs()[-2000:]
                _check_consistent(m, scrapes[-1], produced)
                scrapes.append(m)
                return (
                    _ledger(db) >= len(expected.event_ids) + poison
                    and m.value("parked_events") == 0
                    and all(
                        m.value("events_consumed_total", topic=t) == n for t, n in produced.items()
                    )
                    and all(m.value("in_flight_events", topic=t) == 0 for t in produced)
                    and _lags(m, names.values()) == {0.0}
                )

            wait_until(settled, 120, "every event handled and the lag at 0", poll=0.25)
            during = [
                m
                for m in scrapes
                if any(_finals(m, t) < m.value("events_consumed_total", topic=t) for t in produced)
                or any(_waiting(m, t) > 0 for t in produced)
            ]
            assert during, "no scrape caught the run in progress"
            dlq = consume_all(
                bootstrap,
                dlqs,
                int(scrapes[-1].value("dlq_records_total")),
                timeout=20,
            )
            m = scrape(port)
            assert m is not None
            assert get(port, "/healthz")[0] == 200
            assert get(port, "/readyz")[0] == 200
        finally:
            assert service.terminate() == 0, service.logs()[-3000:]
        uploads = sandbox.uploads(COUNTER)

    # Every record produced was consumed once and has exactly one final outcome.
    for topic, count in produced.items():
        assert m.value("events_consumed_total", topic=topic) == count, topic
        assert _finals(m, topic) == count, (
            topic,
            m.by("events_processed_total", "outcome", topic=topic),
        )
        assert _waiting(m, topic) == 0, topic
        assert (
            m.value("events_processed_total", topic=topic, outcome=Outcome.DUPLICATE)
            == duplicates[topic]
        ), topic
        assert m.value(
            "events_processed_total", topic=topic, outcome=Outcome.DEAD_LETTERED
        ) == m.value("dlq_records_total", topic=topic), topic
    recorded = sum(
        m.value("events_processed_total", outcome=o)
        for o in (Outcome.DELIVERED, Outcome.STALE, Outcome.SKIPPED, Outcome.DEAD_LETTERED)
    )
    # Every event has exactly one ledger entry; poison, with no readable event id, has one
    # under its position (so a redelivery after a crash is not dead-lettered twice).
    assert recorded == _ledger(db) == len(expected.event_ids) + poison

    # DLQ records by class: the poison exactly, and what the DLQ topics really hold.
    in_dlq: Counter[tuple[str, str]] = Counter()
    for record in dlq:
        headers = {k: v.decode() for k, v in record.headers}
        in_dlq[(headers["dlq.original.topic"], headers["dlq.error.class"])] += 1
    exported = {
        (s.labels["topic"], s.labels["error_class"]): s.value for s in m.series("dlq_records_total")
    }
    assert exported == {k: float(v) for k, v in in_dlq.items()}
    for topic, classes in expected.poison.items():
        for error_class, count in classes.items():
            assert exported[(topic, error_class)] == count, (topic, error_class)
    assert m.value("dlq_records_total", error_class=ErrorClass.UNATTRIBUTABLE) > 0

    # Metrica requests by endpoint and result, against what the sandbox received.
    accepted = Counter(u["endpoint"] for u in uploads if u["status"] == "accepted")
    rows = Counter()
    for u in uploads:
        if u["status"] == "accepted":
            rows[u["endpoint"]] += u["elements_count"]
    assert not [u for u in uploads if u["status"] != "accepted"]
    assert set(m.by("metrica_requests_total", "result")) == {"success"}
    for endpoint in ("contacts", "orders"):
        assert accepted[endpoint] > 0
        assert (
            m.value("metrica_requests_total", endpoint=endpoint, result="success")
            == accepted[endpoint]
        )
        assert m.value("upload_records_count", endpoint=endpoint) == accepted[endpoint]
        assert m.value("upload_records_sum", endpoint=endpoint) == rows[endpoint]
    requests = m.by("metrica_requests_total", "endpoint")
    assert requests["counter"] == 1  # the time zone, read once at start-up
    for endpoint, n in requests.items():
        assert m.value("metrica_request_duration_seconds_count", endpoint=endpoint) == n
    # Every attempt spends the daily budget; the gauge shows what is left.
    assert m.value("metrica_daily_quota_remaining") == BUDGET - sum(requests.values())
    assert started_at <= m.value("last_successful_upload_timestamp_seconds") <= time.time()
    assert m.value("setup_error") == 0

    # Lag per partition from librdkafka statistics, placeholders (-1, partition -1) left out.
    lags = {(s.labels["topic"], s.labels["partition"]): s.value for s in m.series("consumer_lag")}
    assert lags == {(t, str(p)): 0.0 for t in names.values() for p in range(PARTITIONS)}
    for topic in names.values():
        assert m.value("in_flight_events", topic=topic) == 0
        assert m.value("assigned_partitions", topic=topic) == PARTITIONS
    assert m.value("parked_events") == 0
    delivered = m.value("events_processed_total", outcome=Outcome.DELIVERED)
    assert 0 < m.value("end_to_end_latency_seconds_count") <= delivered


def _lags(m: Scrape, topics: Iterable[str]) -> set[float]:
    """The lag values of every partition of ``topics``; {-1} until each one has reported."""
    wanted = set(topics)
    series = [s for s in m.series("consumer_lag") if s.labels["topic"] in wanted]
    if len(series) < len(wanted) * PARTITIONS:
        return {-1.0}
    return {s.value for s in series}


def _ledger(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM ledger").fetchone()[0])
    except sqlite3.Error:
        return 0
