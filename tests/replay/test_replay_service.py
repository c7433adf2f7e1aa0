"""The issue's scenario with the real service: an outage longer than the retry budget fills the
DLQ with ``retry_exhausted``; after the outage a replay delivers every event exactly once, a
second replay finds nothing, and a poison record that keeps failing hits the replay cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from metrica_bridge.codec import Codec
from metrica_bridge.config import PROJECT_ROOT, Settings
from metrica_bridge.kafka.producer import Producer
from metrica_bridge.replay import ReplayOptions, replay
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.steps.dlq import dlq_topic
from tests.replay.support import FAST_GROUP
from tests.support.kafka import TEST_CONSUMER_PROPERTIES, TopicFactory, consume_all
from tests.support.stack import COUNTER, TOKEN, ServiceProcess, service_env, wait_until

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
POISON = b"\x00garbage"


def _lead(n: int, deal: str | None) -> dict[str, Any]:
    return {
        "event_id": f"lead-{n}",
        "occurred_at": NOW + timedelta(seconds=n),
        "lead_id": f"L{n}",
        "deal_id": deal,
        "client": {"uniq_id": f"c{n}", "name": None, "phones": [], "emails": []},
        "metrica_client_id": f"17123456789012345{n:02d}",
        "yclid": None,
        "utm": None,
        "consent": True,
    }


def _status(eid: str, deal: str, client: str, status: str, at: datetime) -> dict[str, Any]:
    return {
        "event_id": eid,
        "occurred_at": at,
        "deal_id": deal,
        "client_uniq_id": client,
        "deal_created_at": NOW,
        "status": status,
        "revenue": None,
        "cost": None,
        "currency": None,
        "products": [],
        "version": None,
    }


def _replay_counts(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, str, str]]:
    """(value, error class, replay count) of every record in a DLQ, once ``expected`` are in."""
    records = consume_all(bootstrap, topic, expected, timeout=60)
    out = []
    for r in records:
        h = {k: v.decode() for k, v in r.headers}
        out.append((r.value or b"", h["dlq.error.class"], h.get("dlq.replay.count", "0")))
    return out


def test_outage_then_replay_delivers_each_event_once(
    bootstrap: str, topics: TopicFactory, sandbox: SandboxServer, tmp_path: Path, status_map: Path
) -> None:
    names = topics.crm_topics(3)
    env = service_env(
        bootstrap=bootstrap,
        sandbox_url=sandbox.url,
        store_url=f"sqlite:///{tmp_path / 'state.db'}",
        topics=names,
        status_map=status_map,
        retry_budget_s=3,
        retry_max_attempts=3,
    )
    settings = Settings.model_validate(
        {
            "kafka_bootstrap_servers": bootstrap,
            "kafka_properties": {**TEST_CONSUMER_PROPERTIES, **FAST_GROUP},
            "topic_lead_created": names["lead-created"],
            "topic_deal_status_changed": names["deal-status-changed"],
            "topic_payment_received": names["payment-received"],
            "consumer_group_prefix": env["CONSUMER_GROUP_PREFIX"],
        }
    )
    leads_dlq = dlq_topic(names["lead-created"])
    deals_dlq = dlq_topic(names["deal-status-changed"])
    codec = Codec.from_dir(PROJECT_ROOT / "schemas")
    service = ServiceProcess(env, tmp_path / "service.log").start()

    def orders() -> dict[str, dict[str, Any]]:
        return {o["id"]: o for o in sandbox.orders(COUNTER)}

    def contacts() -> set[str]:
        return {c["uniq_id"] for c in sandbox.contacts(COUNTER)}

    try:
        with Producer({"bootstrap.servers": bootstrap}) as producer:
            # Warm-up: the service is up and delivering before the outage starts.
            producer.send(
                names["lead-created"], b"L0", codec.encode("crm.events.LeadCreated", _lead(0, None))
            )
            producer.flush()
            wait_until(lambda: "c0" in contacts(), 60, "the warm-up lead")

            sandbox.set_faults(outage_seconds=600)
            for n in (1, 2, 3):
                producer.send(
                    names["lead-created"],
                    f"L{n}".encode(),
                    codec.encode("crm.events.LeadCreated", _lead(n, f"D{n}")),
                )
            status = _status("s1", "D1", "c1", "qualified", NOW + timedelta(minutes=5))
            producer.send(
                names["deal-status-changed"],
                b"D1",
                codec.encode("crm.events.DealStatusChanged", status),
            )
            producer.send(names["deal-status-changed"], b"D9", POISON)
            producer.flush()

        leads_dead = _replay_counts(bootstrap, leads_dlq, 3)
        assert [c for _, c, _ in leads_dead] == ["retry_exhausted"] * 3
        deals_dead = _replay_counts(bootstrap, deals_dlq, 2)
        assert sorted(c for _, c, _ in deals_dead) == ["decode_error", "retry_exhausted"]
        assert orders().keys() <= {"D0"}  # nothing got through during the outage
        sandbox.set_faults(outage_seconds=0)

        # Leads first (contacts and orders), then the deal events that build on them.
        first = replay(
            settings, ReplayOptions(leads_dlq, error_classes=frozenset({"retry_exhausted"}))
        )
        assert first.replayed == 3
        wait_until(lambda: {"D1", "D2", "D3"} <= orders().keys(), 60, "the replayed leads")
        assert replay(settings, ReplayOptions(leads_dlq)).read == 0  # nothing new

        deals = replay(settings, ReplayOptions(deals_dlq))
        assert deals.by_class["retry_exhausted"].replayed == 1
        assert deals.by_class["decode_error"].replayed == 1
        wait_until(lambda: orders()["D1"]["order_status"] == "qualified", 60, "the replayed status")

        # The poison fails again at once, each time keeping its replay count, until the cap.
        for count in (1, 2, 3):
            dead = _replay_counts(bootstrap, deals_dlq, 2 + count)
            assert (POISON, "decode_error", str(count)) in dead
            summary = replay(settings, ReplayOptions(deals_dlq))
            assert summary.read == 1
            if count < 3:
                assert summary.by_class["decode_error"].replayed == 1
            else:
                assert summary.by_class["decode_error"].refused == 1
                assert summary.replayed == 0
        assert replay(settings, ReplayOptions(deals_dlq)).read == 0
    finally:
        code = service.terminate()
    logs = service.logs()
    assert code == 0, logs[-3000:]

    final = orders()
    assert [h["order_status"] for h in final["D1"]["history"]] == ["new", "qualified"]
    for deal in ("D2", "D3"):
        assert [h["order_status"] for h in final[deal]["history"]] == ["new"]
    assert {"c1", "c2", "c3"} <= contacts()
    assert TOKEN not in logs
