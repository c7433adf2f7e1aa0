"""Which leased parked events expire: only those that waited their whole time with no
identifier; one leased as ready whose identity stopped binding in between waits on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from metrica_bridge.engine.parking import expires
from metrica_bridge.store.base import Identity, ParkedEvent

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LIMIT = NOW - timedelta(hours=1)  # parked before this: waited PARK_MAX_WAIT_S


def parked(age: timedelta) -> ParkedEvent:
    return ParkedEvent(
        event_id="e1",
        topic="deals",
        partition=0,
        offset=0,
        key=b"D1",
        value=b"",
        headers=(),
        client_uniq_id="C1",
        deal_id="D1",
        occurred_at=NOW - age,
        version=None,
        parked_at=NOW - age,
    )


def test_a_client_that_can_bind_never_expires() -> None:
    bindable = Identity("C1", client_ids=("123",))
    assert not expires(parked(timedelta(hours=5)), bindable, LIMIT)


def test_no_identifier_after_the_whole_wait_expires() -> None:
    assert expires(parked(timedelta(hours=2)), None, LIMIT)
    withdrawn = Identity("C1", phones=("79990000001",), consent=False)
    assert expires(parked(timedelta(hours=2)), withdrawn, LIMIT)


def test_leased_as_ready_but_no_longer_binding_waits_on() -> None:
    # Consent withdrawn between the lease and the read: seconds into the wait, not expired.
    withdrawn = Identity("C1", phones=("79990000001",), consent=False)
    assert not expires(parked(timedelta(seconds=2)), withdrawn, LIMIT)
    assert not expires(parked(timedelta(seconds=2)), None, LIMIT)
