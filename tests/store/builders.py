"""Small constructors for the conformance tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from metrica_bridge.outcomes import Outcome
from metrica_bridge.store import LedgerEntry, ParkedEvent

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def entry(event_id: str, outcome: str = Outcome.DELIVERED, **kw: object) -> LedgerEntry:
    return LedgerEntry(
        event_id=event_id, topic="deal-status-changed", outcome=Outcome(outcome), **kw
    )  # type: ignore[arg-type]


def parked(
    event_id: str,
    deal_id: str,
    client: str,
    *,
    topic: str = "deal-status-changed",
    at_s: int = 0,
    version: int | None = None,
    parked_at: datetime = T0,
    offset: int = 0,
    waits_for: str = "identity",
    deal_created_at: datetime | None = None,
) -> ParkedEvent:
    return ParkedEvent(
        event_id=event_id,
        topic=topic,
        partition=3,
        offset=offset,
        key=deal_id.encode(),
        value=b"\xc3\x01" + event_id.encode() + b"\x00\xff",
        headers=(("trace", b"\x00\x01binary"), ("dlq.replay.count", b"1")),
        client_uniq_id=client,
        deal_id=deal_id,
        occurred_at=T0 + timedelta(seconds=at_s),
        version=version,
        parked_at=parked_at,
        timestamp_ms=1714564800123,
        waits_for=waits_for,
        deal_created_at=deal_created_at,
    )


def run_together(n: int, work: Callable[[int], None]) -> None:
    """Run ``work(0..n-1)`` in n threads released at once; re-raise the first failure."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
