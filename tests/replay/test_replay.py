"""``replay`` against the real broker, on DLQ records built like the service builds them."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Consumer

from metrica_bridge.config import Settings
from metrica_bridge.kafka.admin import list_topics
from metrica_bridge.outcomes import ErrorClass
from metrica_bridge.replay import (
    ReplayBusy,
    ReplayOptions,
    UnknownTopic,
    parse_when,
    replay,
    replay_group_id,
)
from metrica_bridge.steps.dlq import dlq_topic
from tests.replay.support import Dead, fast, headers_of, put_dead
from tests.support.kafka import TopicFactory, consume_all, consumer_config
from tests.support.stack import wait_until


@pytest.fixture
def settings(topics: TopicFactory) -> Settings:
    return fast(topics.crm_settings(partitions=3))


def test_replays_untouched_records_once_and_resumes(bootstrap: str, settings: Settings) -> None:
    deals = settings.topic_deal_status_changed
    leads = settings.topic_lead_created
    dead = [
        Dead(deals, b"D1", b"\x00\xffnot utf-8", partition=2, offset=10),
        Dead(deals, b"D2", b"v2", ErrorClass.REJECTED, partition=1, offset=11, replays=1),
        Dead(deals, b"D3", b"v3", partition=0, offset=12, headers=()),
    ]
    put_dead(bootstrap, dead)
    # Another DLQ's record is not this run's business.
    put_dead(bootstrap, [Dead(leads, b"L1", b"lead")])

    summary = replay(settings, ReplayOptions(dlq_topic(deals)))

    assert (summary.replayed, summary.skipped, summary.refused) == (3, 0, 0)
    assert summary.by_class["retry_exhausted"].replayed == 2
    assert summary.by_class["rejected"].replayed == 1
    out = consume_all(bootstrap, deals, 3, timeout=10)
    by_key = {m.key: m for m in out}
    assert sorted(by_key) == [b"D1", b"D2", b"D3"]
    assert len(out) == 3
    for record in dead:
        message = by_key[record.key]
        assert message.value == record.value
        assert message.partition == record.partition  # back where its entity's events live
        headers = headers_of(message)
        assert headers["dlq.replay.count"] == str(record.replays + 1).encode()
        assert {k for k in headers if k.startswith("dlq.")} == {"dlq.replay.count"}
        assert [h for h in message.headers if not h[0].startswith("dlq.")] == list(record.headers)
    assert consume_all(bootstrap, leads, 0, timeout=2) == []

    again = replay(settings, ReplayOptions(dlq_topic(deals)))
    assert (again.read, again.replayed) == (0, 0)

    put_dead(bootstrap, [Dead(deals, b"D4", b"v4", partition=0, offset=13)])
    third = replay(settings, ReplayOptions(dlq_topic(deals)))
    assert (third.read, third.replayed) == (1, 1)
    assert sorted(m.key or b"" for m in consume_all(bootstrap, deals, 4, timeout=10)) == [
        b"D1",
        b"D2",
        b"D3",
        b"D4",
    ]


def test_dry_run_touches_nothing(bootstrap: str, settings: Settings) -> None:
    deals = settings.topic_deal_status_changed
    put_dead(
        bootstrap,
        [
            Dead(deals, b"D1", b"v1"),
            Dead(deals, b"D2", b"v2", ErrorClass.DECODE_ERROR),
            Dead(deals, b"D3", b"v3", replays=3),
        ],
    )
    options = ReplayOptions(dlq_topic(deals), dry_run=True)

    dry = replay(settings, options)

    assert dry.dry_run
    assert (dry.replayed, dry.refused) == (2, 1)
    assert dry.by_class["decode_error"].replayed == 1
    assert consume_all(bootstrap, deals, 0, timeout=2) == []
    # Nothing committed: a second dry run and then a real run still see everything.
    assert replay(settings, options).replayed == 2
    real = replay(settings, ReplayOptions(dlq_topic(deals)))
    assert (real.replayed, real.refused) == (2, 1)
    assert len(consume_all(bootstrap, deals, 2, timeout=10)) == 2


def test_error_class_filter_skips_and_advances(bootstrap: str, settings: Settings) -> None:
    deals = settings.topic_deal_status_changed
    put_dead(
        bootstrap,
        [
            Dead(deals, b"D1", b"v1", ErrorClass.RETRY_EXHAUSTED),
            Dead(deals, b"D2", b"v2", ErrorClass.REJECTED),
            Dead(deals, b"D3", b"v3", ErrorClass.RETRY_EXHAUSTED),
            Dead(deals, b"D4", b"v4", ErrorClass.INVALID_EVENT),
        ],
    )
    dlq = dlq_topic(deals)

    first = replay(settings, ReplayOptions(dlq, error_classes=frozenset({"retry_exhausted"})))

    assert (first.replayed, first.skipped) == (2, 2)
    assert first.by_class["rejected"].skipped == 1
    assert sorted(m.key or b"" for m in consume_all(bootstrap, deals, 2, timeout=10)) == [
        b"D1",
        b"D3",
    ]
    # Skipped records were not for that run, and the group moved past them.
    assert replay(settings, ReplayOptions(dlq)).read == 0
    # ...until an operator asks for a fresh position.
    again = replay(
        settings,
        ReplayOptions(
            dlq,
            error_classes=frozenset({"rejected", "invalid_event"}),
            from_beginning=True,
        ),
    )
    assert (again.read, again.replayed, again.skipped) == (4, 2, 2)
    keys = sorted(m.key or b"" for m in consume_all(bootstrap, deals, 4, timeout=10))
    assert keys == [b"D1", b"D2", b"D3", b"D4"]


def test_since_until_on_failed_at(bootstrap: str, settings: Settings) -> None:
    deals = settings.topic_deal_status_changed
    put_dead(
        bootstrap,
        [
            Dead(deals, b"D1", b"v1", failed_at="2024-05-01T23:59:59.999Z"),
            Dead(deals, b"D2", b"v2", failed_at="2024-05-02T00:00:00.000Z"),
            Dead(deals, b"D3", b"v3", failed_at="2024-05-02T18:30:00.000Z"),
            Dead(deals, b"D4", b"v4", failed_at="2024-05-03T00:00:00.000Z"),
            Dead(deals, b"D5", b"v5", failed_at="not a time"),
        ],
    )
    dlq = dlq_topic(deals)

    def would(since: str | None, until: str | None) -> int:
        options = ReplayOptions(
            dlq,
            since=parse_when(since) if since else None,
            until=parse_when(until, end_of_day=True) if until else None,
            dry_run=True,
        )
        summary = replay(settings, options)
        assert summary.read == 5
        return summary.replayed

    assert would("2024-05-02", "2024-05-02") == 2  # the whole day of May 2nd
    assert would("2024-05-02T18:00:00+03:00", None) == 2  # 15:00 UTC
    assert would(None, "2024-05-02T00:00:00Z") == 1  # until is exclusive
    assert would(None, None) == 5  # no time filter: even an unreadable time replays


def test_limit_stops_and_the_next_run_continues(bootstrap: str, settings: Settings) -> None:
    deals = settings.topic_deal_status_changed
    put_dead(
        bootstrap,
        [
            Dead(deals, b"D1", b"v1"),
            Dead(deals, b"D2", b"v2", ErrorClass.REJECTED),  # skipped: not counted
            Dead(deals, b"D3", b"v3"),
            Dead(deals, b"D4", b"v4"),
            Dead(deals, b"D5", b"v5"),
        ],
    )
    dlq = dlq_topic(deals)
    only = frozenset({"retry_exhausted"})

    first = replay(settings, ReplayOptions(dlq, error_classes=only, limit=2))

    assert (first.replayed, first.skipped, first.limit_reached) == (2, 1, True)
    assert sorted(m.key or b"" for m in consume_all(bootstrap, deals, 2, timeout=10)) == [
        b"D1",
        b"D3",
    ]
    rest = replay(settings, ReplayOptions(dlq, error_classes=only, limit=10))
    assert (rest.read, rest.replayed, rest.limit_reached) == (2, 2, False)


def test_cap_refuses_and_reports(bootstrap: str, settings: Settings) -> None:
    deals = settings.topic_deal_status_changed
    put_dead(
        bootstrap,
        [
            Dead(deals, b"D1", b"v1", ErrorClass.DECODE_ERROR, replays=3),
            Dead(deals, b"D2", b"v2", ErrorClass.DECODE_ERROR, replays=2),
        ],
    )

    summary = replay(settings, ReplayOptions(dlq_topic(deals)))

    assert summary.by_class["decode_error"].refused == 1
    assert summary.by_class["decode_error"].replayed == 1
    (refusal,) = summary.refusals
    assert (refusal.key, refusal.offset, refusal.replay_count) == ("D1", 0, 3)
    (out,) = consume_all(bootstrap, deals, 1, timeout=10)
    assert out.key == b"D2"
    assert headers_of(out)["dlq.replay.count"] == b"3"


def test_rate_paces_records(bootstrap: str, settings: Settings) -> None:
    deals = settings.topic_deal_status_changed
    put_dead(bootstrap, [Dead(deals, f"D{i}".encode(), b"v") for i in range(6)])

    summary = replay(settings, ReplayOptions(dlq_topic(deals), rate=10))

    assert summary.replayed == 6
    out = consume_all(bootstrap, deals, 6, timeout=10)
    stamps = sorted(m.timestamp_ms for m in out)
    # Six records at 10/s cannot span less than 0.5 s (a lower bound: never flaky when slow).
    assert stamps[-1] - stamps[0] >= 450


def test_stop_ends_cleanly_with_work_committed(bootstrap: str, settings: Settings) -> None:
    deals = settings.topic_deal_status_changed
    put_dead(bootstrap, [Dead(deals, f"D{i}".encode(), b"v") for i in range(40)])
    stop = threading.Event()
    seen: list[int] = []

    def progress(summary: object) -> None:
        seen.append(1)
        stop.set()  # after the first settled batch

    first = replay(
        settings, ReplayOptions(dlq_topic(deals), rate=20), on_progress=progress, stop=stop
    )

    assert first.interrupted
    assert 0 < first.replayed < 40
    rest = replay(settings, ReplayOptions(dlq_topic(deals)))
    assert first.replayed + rest.replayed == 40
    assert len(consume_all(bootstrap, deals, 40, timeout=10)) == 40


def test_unknown_dlq_is_an_error_and_not_created(bootstrap: str, settings: Settings) -> None:
    with pytest.raises(UnknownTopic):
        replay(settings, ReplayOptions("no-such-topic.dlq"))
    assert "no-such-topic.dlq" not in list_topics(bootstrap)


def test_unknown_original_topic_stops_before_it(bootstrap: str, settings: Settings) -> None:
    deals = settings.topic_deal_status_changed
    put_dead(
        bootstrap,
        [Dead(deals, b"D1", b"v1"), Dead("gone-topic", b"X", b"x"), Dead(deals, b"D2", b"v2")],
        dlq=dlq_topic(deals),
    )

    with pytest.raises(UnknownTopic) as caught:
        replay(settings, ReplayOptions(dlq_topic(deals)))

    assert caught.value.summary is not None
    assert caught.value.summary.replayed == 1
    assert "gone-topic" not in list_topics(bootstrap)  # never auto-created
    # D1 went out and was committed; the run stopped at the unknown topic, so the next run
    # meets it again (and D2 is still waiting behind it).
    with pytest.raises(UnknownTopic) as again:
        replay(settings, ReplayOptions(dlq_topic(deals)))
    assert again.value.summary is not None
    assert again.value.summary.read == 0
    assert [m.key for m in consume_all(bootstrap, deals, 1, timeout=10)] == [b"D1"]


def test_a_second_concurrent_replay_is_refused(bootstrap: str, settings: Settings) -> None:
    deals = settings.topic_deal_status_changed
    put_dead(bootstrap, [Dead(deals, b"D1", b"v1")])
    dlq = dlq_topic(deals)
    holder = Consumer(
        # The range assignor gives the one partition to the member whose id sorts first.
        consumer_config(
            bootstrap, replay_group_id(settings, dlq), client_id="aaa-holder", **FAST_GROUP_KW
        )
    )
    assigned: list[int] = []
    holder.subscribe([dlq], on_assign=lambda _c, ps: assigned.extend(p.partition for p in ps))
    try:
        wait_until(lambda: bool(holder.poll(0.1) or assigned), 20, "the holder's assignment")
        # The holder keeps polling in the background so it stays in the group.
        done = threading.Event()
        poller = threading.Thread(
            target=lambda: [holder.poll(0.1) for _ in iter(done.is_set, True)]
        )
        poller.start()
        try:
            with pytest.raises(ReplayBusy):
                replay(settings, ReplayOptions(dlq))
        finally:
            done.set()
            poller.join()
    finally:
        holder.close()
    assert consume_all(bootstrap, deals, 0, timeout=2) == []


FAST_GROUP_KW = {"session_timeout_ms": "2000", "heartbeat_interval_ms": "500"}
