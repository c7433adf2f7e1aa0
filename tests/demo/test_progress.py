"""The demo's accounting, on a registry of our own (no broker needed)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from rich.console import Console

from metrica_bridge.demo.progress import Produced, Snapshot, take_snapshot
from metrica_bridge.demo.view import live_view
from metrica_bridge.metrics import PREFIX


def _snapshot(**values: object) -> Snapshot:
    defaults: dict[str, object] = {"at": time.monotonic(), "simulation_done": True}
    return Snapshot(**{**defaults, **values})  # type: ignore[arg-type]


def test_a_parked_event_counts_once_whatever_became_of_it() -> None:
    # 10 events: 6 delivered at once; 4 parked, of which 2 were released and delivered,
    # 1 went to the DLQ as unattributable, 1 still waits.
    s = _snapshot(
        produced=10,
        consumed=10,
        outcomes={"delivered": 8, "parked": 4, "dead_lettered": 1},
        released=2,
        dlq={"unattributable": 1},
    )
    assert s.parked_now == 1
    assert s.accounted == 10
    assert s.handled()


def test_a_released_event_not_yet_recorded_is_not_handled() -> None:
    s = _snapshot(
        produced=3, consumed=3, outcomes={"delivered": 2, "parked": 1}, released=1, dlq={}
    )
    assert s.accounted == 2
    assert not s.handled()


def test_not_handled_while_anything_is_pending() -> None:
    done = {"produced": 5, "consumed": 5, "outcomes": {"delivered": 5}}
    assert _snapshot(**done).handled()
    assert not _snapshot(**done, simulation_done=False).handled()
    assert not _snapshot(**done, in_flight=1).handled()
    assert not _snapshot(**done, lag=2).handled()
    assert not _snapshot(**{**done, "consumed": 4}).handled()


def test_snapshot_reads_the_registry() -> None:
    registry = CollectorRegistry()
    consumed = Counter(PREFIX + "events_consumed_total", "", ["topic"], registry=registry)
    processed = Counter(
        PREFIX + "events_processed_total", "", ["topic", "outcome"], registry=registry
    )
    lag = Gauge(PREFIX + "consumer_lag", "", ["topic", "partition"], registry=registry)
    uploads = Histogram(PREFIX + "upload_records", "", ["endpoint"], registry=registry)
    consumed.labels(topic="a").inc(3)
    consumed.labels(topic="b").inc(2)
    processed.labels(topic="a", outcome="delivered").inc(3)
    processed.labels(topic="b", outcome="stale").inc(2)
    lag.labels(topic="a", partition="0").set(4)
    lag.labels(topic="a", partition="1").set(-1)  # unknown: not lag
    uploads.labels(endpoint="orders").observe(10)
    uploads.labels(endpoint="orders").observe(30)
    produced = Produced(target=5)
    produced.count = 5
    s = take_snapshot(produced, (7, 6, 2), registry)
    assert s.consumed == 5
    assert s.outcomes == {"delivered": 3, "stale": 2}
    assert s.lag == 4
    assert s.uploads == {"orders": 2}
    assert s.records_per_upload == 20.0
    assert (s.metrica_orders, s.metrica_contacts, s.metrica_uploads) == (7, 6, 2)
    assert s.accounted == 5
    assert not s.handled()  # the simulator has not said it is finished


def test_the_view_shows_the_pace_the_projection_and_a_quota_wait() -> None:
    registry = CollectorRegistry()
    for name, value in (
        ("metrica_daily_quota_remaining", 4_100),
        ("metrica_pace_requests_per_second", 1.25),
        ("metrica_requests_projected", 5_200),
        ("metrica_daily_budget", 5_000),
        ("metrica_quota_waiting", 1),
    ):
        Gauge(PREFIX + name, "", registry=registry).set(value)
    s = take_snapshot(Produced(target=5), (0, 0, 0), registry)
    assert (s.quota_remaining, s.pace, s.projected, s.daily_budget) == (4_100, 1.25, 5_200, 5_000)
    assert s.waiting_for_quota
    console = Console(width=200, record=True)
    console.print(live_view([s], "demo", 1.0, done=False, stopping=False))
    shown = console.export_text()
    assert "75.0 requests/min" in shown
    assert "5,200 of 5,000 projected" in shown
    assert "waiting for the next quota day" in shown
