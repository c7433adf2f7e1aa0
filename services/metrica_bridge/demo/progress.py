"""What the demo shows: a snapshot of the service's Prometheus registry, the simulator's count
and the sandbox's holdings, and the accounting that says when every event has been handled.

Accounting. Each consumed event ends in one outcome (DESIGN.md §4). A parked event records
``parked`` first and, later, a second outcome: ``delivered``/``stale``/... once released, or
``dead_lettered`` as ``unattributable`` after the wait. So the events accounted for are
``(all outcomes except parked) + (still parked)``, with
``still parked = parked - released - unattributable``; an event released but not yet recorded
is in neither, which keeps the demo from calling itself done too early.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from metrica_bridge.metrics import PREFIX, REGISTRY
from metrica_bridge.outcomes import ErrorClass, Outcome
from metrica_bridge.simulate import SimulatedMessage

Samples = list[tuple[str, dict[str, str], float]]


class Produced:
    """Counts what the simulator hands to the producer, and stops it when asked (thread-safe
    enough: one writer thread, readers only look at ints)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.by_fate: Counter[str] = Counter()
        self.finished = False
        self.acknowledged: int | None = None  # set once the broker acknowledged everything
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def through(self, messages: Iterable[SimulatedMessage]) -> Iterator[SimulatedMessage]:
        for message in messages:
            if self._stop.is_set():
                return
            self.count += 1
            self.by_fate[message.fate.value] += 1
            yield message


@dataclass(frozen=True)
class Snapshot:
    at: float  # monotonic
    produced: int = 0
    produce_target: int = 0
    simulation_done: bool = False
    fates: dict[str, int] = field(default_factory=dict)
    consumed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    released: int = 0
    dlq: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    lag: int = 0
    assigned: int = 0
    uploads: dict[str, int] = field(default_factory=dict)  # endpoint -> accepted uploads
    upload_records: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)  # result class -> requests
    quota_remaining: int | None = None
    pace: float | None = None  # requests per second the daily budget's pace allows
    projected: int | None = None  # requests this quota day will have used by the reset
    daily_budget: int | None = None
    waiting_for_quota: bool = False
    setup_error: bool = False
    metrica_orders: int = 0
    metrica_contacts: int = 0
    metrica_uploads: int = 0

    def outcome(self, name: str) -> int:
        return self.outcomes.get(name, 0)

    @property
    def parked_now(self) -> int:
        unattributable = self.dlq.get(ErrorClass.UNATTRIBUTABLE.value, 0)
        return max(0, self.outcome(Outcome.PARKED) - self.released - unattributable)

    @property
    def accounted(self) -> int:
        final = sum(n for name, n in self.outcomes.items() if name != Outcome.PARKED)
        return final + self.parked_now

    @property
    def records_per_upload(self) -> float:
        uploads = sum(self.uploads.values())
        return sum(self.upload_records.values()) / uploads if uploads else 0.0

    def handled(self) -> bool:
        """The simulator is finished and every event it produced has its outcome."""
        return (
            self.simulation_done
            and self.consumed >= self.produced
            and self.accounted >= self.produced
            and self.in_flight == 0
            and self.lag == 0
        )


def _samples(registry: CollectorRegistry) -> Samples:
    return [
        (sample.name, sample.labels, sample.value)
        for family in registry.collect()
        for sample in family.samples
    ]


def _by(samples: Samples, name: str, label: str | None = None) -> dict[str, int]:
    out: Counter[str] = Counter()
    for sample_name, labels, value in samples:
        if sample_name == PREFIX + name:
            out[labels.get(label, "") if label else ""] += int(value)
    return dict(out)


def _total(samples: Samples, name: str) -> int:
    return sum(_by(samples, name).values())


def _gauge(samples: Samples, name: str) -> float | None:
    """An unlabelled gauge's value, None while it is not exported."""
    return next((v for n, _, v in samples if n == PREFIX + name), None)


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)


def take_snapshot(
    produced: Produced,
    metrica: tuple[int, int, int] = (0, 0, 0),
    registry: CollectorRegistry = REGISTRY,
) -> Snapshot:
    """``metrica``: the sandbox's (orders, contacts, uploads) for the demo counter."""
    s = _samples(registry)
    lag = sum(max(0, n) for n in _by(s, "consumer_lag", "partition").values())
    return Snapshot(
        at=time.monotonic(),
        produced=produced.acknowledged if produced.acknowledged is not None else produced.count,
        produce_target=produced.target,
        simulation_done=produced.finished,
        fates=dict(produced.by_fate),
        consumed=_total(s, "events_consumed_total"),
        outcomes=_by(s, "events_processed_total", "outcome"),
        released=_total(s, "events_released_total"),
        dlq=_by(s, "dlq_records_total", "error_class"),
        in_flight=_total(s, "in_flight_events"),
        lag=lag,
        assigned=_total(s, "assigned_partitions"),
        uploads=_by(s, "upload_records_count", "endpoint"),
        upload_records=_by(s, "upload_records_sum", "endpoint"),
        requests=_by(s, "metrica_requests_total", "result"),
        quota_remaining=_whole(_gauge(s, "metrica_daily_quota_remaining")),
        pace=_gauge(s, "metrica_pace_requests_per_second"),
        projected=_whole(_gauge(s, "metrica_requests_projected")),
        daily_budget=_whole(_gauge(s, "metrica_daily_budget")),
        waiting_for_quota=bool(_gauge(s, "metrica_quota_waiting")),
        setup_error=_total(s, "setup_error") > 0,
        metrica_orders=metrica[0],
        metrica_contacts=metrica[1],
        metrica_uploads=metrica[2],
    )


def rate(history: Iterable[Snapshot], value: str, window_s: float = 3.0) -> float:
    """Per second over the last ``window_s`` of snapshots (oldest first)."""
    points = list(history)
    if len(points) < 2:
        return 0.0
    last = points[-1]
    first = next((p for p in points if last.at - p.at <= window_s), points[0])
    elapsed = last.at - first.at
    if elapsed <= 0:
        return 0.0
    return max(0.0, (_value(last, value) - _value(first, value)) / elapsed)


def _value(snapshot: Snapshot, name: str) -> float:
    if name == "delivered":
        return snapshot.outcome(Outcome.DELIVERED)
    return float(getattr(snapshot, name))
