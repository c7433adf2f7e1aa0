"""Event-time alignment: a record waits for the topics upstream of its own to be consumed past
its timestamp; the first topic never waits; nothing waits past the hold limit or for a topic
with no partition here; until the upstream consumer has joined, everything downstream waits."""

from __future__ import annotations

import time

from metrica_bridge.codec import Codec
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.engine.align import Alignment
from metrica_bridge.engine.intake import Intake
from metrica_bridge.engine.work import Work
from metrica_bridge.events import EventKind
from metrica_bridge.kafka.record import SourceRecord

LEADS, DEALS, PAYMENTS = "leads", "deals", "payments"
NOW_MS = int(time.time() * 1000)


def work(topic: str, partition: int, ts: int, consumed_at: float | None = None) -> Work:
    source = SourceRecord(topic, partition, 0, b"k", b"v", (), NOW_MS - 60_000 + ts)
    return Work(source, "k", consumed_at=time.monotonic() if consumed_at is None else consumed_at)


def joined(alignment: Alignment, partitions: int = 2) -> Alignment:
    for topic in (LEADS, DEALS, PAYMENTS):
        alignment.assigned(topic, [(topic, p) for p in range(partitions)])
    return alignment


def test_a_deal_event_waits_until_every_lead_partition_is_past_it() -> None:
    alignment = joined(Alignment([LEADS, DEALS, PAYMENTS], margin_s=0.1, max_hold_s=30))
    assert not alignment.hold(work(LEADS, 0, 100))  # the first topic never waits
    deal = work(DEALS, 0, 150)
    assert alignment.hold(deal)  # lead partition 1 has not been read at all yet
    assert alignment.release(time.monotonic()) == []
    assert not alignment.hold(work(LEADS, 1, 200))
    assert alignment.release(time.monotonic()) == []  # partition 0 is only at 100
    assert not alignment.hold(work(LEADS, 0, 140))
    assert alignment.release(time.monotonic()) == []  # the slowest partition is what counts
    assert not alignment.hold(work(LEADS, 0, 150))
    assert alignment.release(time.monotonic()) == [deal]
    assert len(alignment) == 0


def test_payments_wait_for_deals_as_well_as_leads() -> None:
    alignment = joined(Alignment([LEADS, DEALS, PAYMENTS], margin_s=0.1, max_hold_s=30), 1)
    alignment.hold(work(LEADS, 0, 500))
    payment = work(PAYMENTS, 0, 300)
    assert alignment.hold(payment)
    alignment.hold(work(DEALS, 0, 299))
    assert alignment.release(time.monotonic()) == []
    alignment.hold(work(DEALS, 0, 301))
    assert alignment.release(time.monotonic()) == [payment]


def test_a_partition_at_its_end_holds_back_only_the_fetch_latency() -> None:
    alignment = joined(Alignment([LEADS, DEALS], margin_s=0.5, max_hold_s=30), 1)
    alignment.at_end(LEADS, [(LEADS, 0)])
    recent = SourceRecord(DEALS, 0, 0, b"k", b"v", (), int(time.time() * 1000))
    fresh = Work(recent, "k", consumed_at=time.monotonic())
    assert alignment.hold(fresh)  # produced just now: a lead of the same moment may be in flight
    old = SourceRecord(DEALS, 1, 0, b"k", b"v", (), int(time.time() * 1000) - 2_000)
    assert not alignment.hold(Work(old, "k"))
    time.sleep(0.6)
    assert alignment.release(time.monotonic()) == [fresh]


def test_one_partition_far_ahead_does_not_block_another_behind_it() -> None:
    alignment = joined(Alignment([LEADS, DEALS], margin_s=0.1, max_hold_s=30), 1)
    alignment.hold(work(LEADS, 0, 100))
    ahead = work(DEALS, 0, 900)
    behind = work(DEALS, 1, 50)
    assert alignment.hold(ahead)
    assert not alignment.hold(behind)  # its partition has nothing held: it goes at once
    later_behind = work(DEALS, 1, 60)
    assert not alignment.hold(later_behind)
    assert alignment.release(time.monotonic()) == []
    assert len(alignment) == 1
    assert (alignment.held(DEALS), alignment.held(LEADS)) == (1, 0)  # what pauses a topic
    assert alignment.drop({(DEALS, 0)}) == [ahead]
    assert alignment.held(DEALS) == 0


def test_nothing_is_held_past_the_limit() -> None:
    alignment = joined(Alignment([LEADS, DEALS], margin_s=0.1, max_hold_s=5))
    stuck = work(DEALS, 0, 100, consumed_at=time.monotonic() - 6)
    assert alignment.hold(stuck) is True
    assert alignment.release(time.monotonic()) == [stuck]


def test_until_the_upstream_consumer_joins_everything_waits_then_an_empty_assignment_frees_it() -> (
    None
):
    alignment = Alignment([LEADS, DEALS], margin_s=0.1, max_hold_s=30)
    alignment.assigned(DEALS, [(DEALS, 0)])
    deal = work(DEALS, 0, 100)
    assert alignment.hold(deal)
    alignment.assigned(LEADS, [])  # joined, with no lead partition for this process
    assert alignment.release(time.monotonic()) == [deal]
    assert not alignment.hold(work(DEALS, 0, 200))


def test_revoked_partitions_stop_counting_and_their_held_records_are_dropped() -> None:
    alignment = joined(Alignment([LEADS, DEALS], margin_s=0.1, max_hold_s=30), 2)
    alignment.hold(work(LEADS, 0, 1_000))
    held = work(DEALS, 0, 500)
    assert alignment.hold(held)  # lead partition 1 was never read
    assert alignment.drop({(DEALS, 0)}) == [held]
    alignment.revoked(LEADS, [(LEADS, 1)])
    assert not alignment.hold(work(DEALS, 1, 600))  # only lead partition 0 counts now


def test_off_when_disabled_or_alone() -> None:
    assert not Alignment([LEADS, DEALS], margin_s=0.1, max_hold_s=0).hold(work(DEALS, 0, 1))
    alone = Alignment([DEALS], margin_s=0.1, max_hold_s=30)
    alone.assigned(DEALS, [(DEALS, 0)])
    assert not alone.hold(work(DEALS, 0, 1))


def test_the_intake_keeps_the_alignment_it_is_given_even_while_it_holds_nothing() -> None:
    """An Alignment holding nothing has length 0, so it is falsy: a ``given or default`` once
    swapped the service's alignment for an empty one at start-up and event-time alignment was
    off (found by ``make bench``: three times the parked events, ten times the stale ones)."""
    alignment = Alignment([LEADS, DEALS], margin_s=0.1, max_hold_s=30)
    assert not alignment  # the trap
    topics = {EventKind.LEAD_CREATED: LEADS, EventKind.DEAL_STATUS_CHANGED: DEALS}
    intake = Intake(Codec.from_dir(PROJECT_ROOT / "schemas"), topics, alignment)
    intake.assigned(LEADS, [(LEADS, 0)])
    intake.assigned(DEALS, [(DEALS, 0)])
    intake.consume([work(DEALS, 0, 100).source], lambda _: None)
    assert intake.held(DEALS) == 1  # the lead partition has not been read yet
    assert intake.take(10) == []
    intake.consume([work(LEADS, 0, 200).source], lambda _: None)
    assert [w.source.topic for w in intake.take(10)] == [LEADS, DEALS]
