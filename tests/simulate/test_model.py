"""The generated stream: reproducible, with the promised shares and the CRM's invariants."""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from metrica_bridge import normalize
from metrica_bridge.codec import Codec, DecodeError
from metrica_bridge.events import (
    DealStatusChanged,
    EventKind,
    InvalidEvent,
    LeadCreated,
    PaymentReceived,
    expected_kind,
    parse_event,
)
from metrica_bridge.simulate import (
    Fate,
    SimulatedMessage,
    SimulationConfig,
    Story,
    generate,
    read_manifest,
    with_manifest,
)
from tests.simulate.conftest import NOW_MS

TOPIC_KIND = {"lead-created": "LeadCreated", "deal-status-changed": "DealStatusChanged"}
TOPIC_KIND["payment-received"] = "PaymentReceived"


def _parsed(codec: Codec, message: SimulatedMessage) -> Any:
    decoded = codec.decode(message.value)
    return parse_event(decoded.schema_name, decoded.record)


def _validate(schema_name: str, record: dict[str, Any], kind: EventKind) -> None:
    expected_kind(parse_event(schema_name, record), kind)


def _good(stream: list[SimulatedMessage]) -> list[SimulatedMessage]:
    return [m for m in stream if m.fate in (Fate.OK, Fate.LATE)]


def test_same_seed_same_bytes_other_seed_other_stream(
    stream_config: SimulationConfig, stream: list[SimulatedMessage], codec: Codec
) -> None:
    again = list(generate(stream_config, codec))
    assert again == stream
    other = list(generate(replace(stream_config, seed=12), codec))
    assert [m.value for m in other] != [m.value for m in stream]
    # Different seeds never share entity ids, so two runs never collide in one service.
    assert not {m.key for m in other if m.fate is Fate.OK} & {
        m.key for m in stream if m.fate is Fate.OK
    }


def test_exact_count_and_shares(
    stream_config: SimulationConfig, stream: list[SimulatedMessage]
) -> None:
    fates = Counter(m.fate for m in stream)
    assert len(stream) == stream_config.count
    assert fates[Fate.DUPLICATE] == round(stream_config.duplicates * stream_config.count)
    poison = fates[Fate.DECODE_ERROR] + fates[Fate.INVALID_EVENT]
    assert poison == round(stream_config.poison * stream_config.count)
    target_late = stream_config.late * stream_config.count
    assert 0.8 * target_late <= fates[Fate.LATE] <= 1.1 * target_late
    assert {m.poison for m in stream if m.poison} == {
        "garbage",
        "truncated",
        "empty_event_id",
        "negative_amount",
        "wrong_type",
        "null_key",
        "control_chars",
        "far_future",
        "oversized_text",
    }
    assert {m.story for m in stream if m.story} == {s.value for s in Story}


def test_no_late_duplicate_or_poison_unless_asked(codec: Codec) -> None:
    clean = list(generate(SimulationConfig(count=2_000, seed=5, now_ms=NOW_MS), codec))
    assert {m.fate for m in clean} == {Fate.OK}
    assert len({m.event_id for m in clean}) == len(clean)


def test_every_good_message_decodes_validates_and_is_keyed_by_its_entity(
    stream: list[SimulatedMessage], codec: Codec
) -> None:
    for message in _good(stream):
        event = _parsed(codec, message)
        assert expected_kind(event, event.kind)
        assert message.topic == event.kind.value
        assert type(event).__name__ == message.kind == TOPIC_KIND[message.topic]
        assert message.event_id == event.event_id
        expected_key = event.lead_id if isinstance(event, LeadCreated) else event.deal_id
        assert message.key == expected_key.encode()
        facts = message.facts
        assert facts is not None
        assert int(event.occurred_at.timestamp() * 1000) == facts["occurred_at_ms"]
        if isinstance(event, DealStatusChanged):
            assert (event.status, event.version) == (facts["status"], facts["version"])
            assert event.revenue == (None if facts["revenue"] is None else event.revenue)
        if isinstance(event, PaymentReceived):
            assert str(event.amount) == facts["amount"]


def test_poison_fails_the_way_its_fate_says(stream: list[SimulatedMessage], codec: Codec) -> None:
    poison = [m for m in stream if m.fate in (Fate.DECODE_ERROR, Fate.INVALID_EVENT)]
    assert poison
    for message in poison:
        if message.fate is Fate.DECODE_ERROR:
            with pytest.raises(DecodeError):
                codec.decode(message.value)
            continue
        decoded = codec.decode(message.value)  # well-formed Avro that breaks the contract
        if message.poison == "null_key":  # a valid record; the missing key breaks it
            assert message.key is None
            _validate(decoded.schema_name, decoded.record, EventKind(message.topic))
            continue
        with pytest.raises(InvalidEvent):
            _validate(decoded.schema_name, decoded.record, EventKind(message.topic))


def test_duplicates_repeat_an_earlier_message_exactly(stream: list[SimulatedMessage]) -> None:
    seen: dict[str | None, SimulatedMessage] = {}
    for message in stream:
        if message.fate is Fate.DUPLICATE:
            original = seen[message.event_id]
            assert (message.topic, message.key, message.value) == (
                original.topic,
                original.key,
                original.value,
            )
        elif message.fate in (Fate.OK, Fate.LATE):
            assert message.event_id not in seen, "event ids are unique"
            seen[message.event_id] = message


def test_deals_move_forward_except_for_the_late_events(stream: list[SimulatedMessage]) -> None:
    latest: dict[str, tuple[int, int]] = {}
    created: dict[str, int] = {}
    for message in _good(stream):
        facts = message.facts
        assert facts is not None
        deal_id = facts["deal_id"]
        if deal_id is None:
            continue
        if facts.get("deal_created_at_ms") is not None:
            assert (
                created.setdefault(deal_id, facts["deal_created_at_ms"])
                == (facts["deal_created_at_ms"])
            ), "deal_created_at never changes"
        if message.kind == "LeadCreated":
            assert deal_id not in latest, "a lead carrying deal_id is the deal's first event"
        when = (facts["occurred_at_ms"], facts.get("version") or 0)
        previous = latest.get(deal_id)
        if message.fate is Fate.LATE:
            assert previous is not None
            assert when < previous, "a late status is older than one already sent"
            if facts["version"] is not None and previous[1]:
                assert facts["version"] < previous[1]
        else:
            assert previous is None or when > previous
            latest[deal_id] = when
        assert facts["occurred_at_ms"] >= created[deal_id]


def test_payments_belong_to_won_deals_and_have_distinct_ids(
    stream: list[SimulatedMessage],
) -> None:
    won: set[str] = set()
    payment_ids: list[str] = []
    for message in _good(stream):
        facts = message.facts
        assert facts is not None
        if message.kind == "DealStatusChanged" and facts["status"] == "won":
            won.add(facts["deal_id"])
        if message.kind == "PaymentReceived":
            assert facts["deal_id"] in won
            payment_ids.append(facts["payment_id"])
    assert payment_ids
    assert len(set(payment_ids)) == len(payment_ids)


def test_identities_arrive_late_or_never_for_some_clients(
    stream: list[SimulatedMessage],
) -> None:
    first_lead: dict[str, int] = {}
    first_deal: dict[str, int] = {}
    stories: dict[str, set[str | None]] = defaultdict(set)
    for index, message in enumerate(_good(stream)):
        facts = message.facts
        assert facts is not None
        client = facts["client"]
        stories[client].add(message.story)
        target = first_lead if message.kind == "LeadCreated" else first_deal
        target.setdefault(client, index)
    late_identity = {c for c, s in stories.items() if Story.IDENTITY_LATE in s}
    anonymous = {c for c, s in stories.items() if Story.ANONYMOUS in s}
    assert late_identity
    assert anonymous
    for client in late_identity:
        assert first_deal[client] < first_lead.get(client, len(stream))
    assert not anonymous & set(first_lead)


def test_leads_carry_messy_but_normalisable_identifiers(stream: list[SimulatedMessage]) -> None:
    leads = [m.facts for m in _good(stream) if m.kind == "LeadCreated"]
    assert all(lead is not None for lead in leads)
    phones = [p for lead in leads if lead for p in lead["phones"]]
    emails = [e for lead in leads if lead for e in lead["emails"]]
    client_ids = [lead["metrica_client_id"] for lead in leads if lead and lead["metrica_client_id"]]
    assert len({p for p in phones if not p.strip().isdigit()}) > 10, "formats vary"
    assert any(e != e.strip().lower() for e in emails)
    normalised = [normalize.phone(p) for p in phones]
    assert sum(p is None for p in normalised) < 0.1 * len(phones)
    assert all(p is None or (len(p) == 11 and p.startswith("79")) for p in normalised)
    assert all(normalize.email(e) for e in emails)
    assert all(len(c) == 19 and normalize.client_id(c) == c for c in client_ids)
    assert 0.6 < len(client_ids) / len(leads) < 0.95  # mostly, not always
    assert any(lead and not lead["consent"] for lead in leads)
    assert any(
        lead and not (lead["phones"] or lead["emails"] or lead["metrica_client_id"])
        for lead in leads
    ), "some leads carry no identifier at all"


def test_times_are_recent_except_old_deals(
    stream_config: SimulationConfig, stream: list[SimulatedMessage]
) -> None:
    recent_from = NOW_MS - int(
        timedelta(days=stream_config.span_days, hours=3).total_seconds() * 1000
    )
    old_before = NOW_MS - int(timedelta(days=29).total_seconds() * 1000)
    old_deals = 0
    for message in _good(stream):
        facts = message.facts
        assert facts is not None
        assert facts["occurred_at_ms"] <= NOW_MS
        created = facts.get("deal_created_at_ms")
        if facts["old"]:
            # Created a month ago (the lead of an old deal happened then too); updates are recent.
            old_deals += 1
            assert (facts["occurred_at_ms"] if created is None else created) < old_before
        else:
            assert facts["occurred_at_ms"] >= recent_from
            assert created is None or created >= recent_from
    assert old_deals


def test_manifest_lines_describe_every_message(stream: list[SimulatedMessage]) -> None:
    out = io.StringIO()
    passed = list(with_manifest(stream[:500], out))
    assert passed == stream[:500]
    lines = list(read_manifest(out.getvalue().splitlines()))
    assert len(lines) == 500
    for line, message in zip(lines, passed, strict=True):
        assert line["topic"] == message.topic
        assert line["event_id"] == message.event_id
        assert line["fate"] == message.fate.value
        assert line["key"] == (None if message.key is None else message.key.decode())


@pytest.mark.parametrize(
    "bad",
    [
        {"count": -1},
        {"clients": 0},
        {"late": 1.5},
        {"duplicates": 0.6, "poison": 0.6},
        {"topics": {}},
    ],
)
def test_bad_configurations_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must|cannot|no topic"):
        SimulationConfig(**bad)
