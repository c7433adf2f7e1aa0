"""The service end to end on a small hand-written stream: leads, status changes, payments, a
poison record and a deal whose lead arrives later (parked, then released)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from metrica_bridge.codec import Codec
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.kafka.producer import Producer
from metrica_bridge.sandbox import SandboxServer
from tests.support.kafka import TopicFactory, consume_all
from tests.support.stack import (
    COUNTER,
    TOKEN,
    ServiceProcess,
    service_env,
    wait_until,
)

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _lead(n: int, client: str, deal: str | None, at: datetime, **kw: Any) -> dict[str, Any]:
    return {
        "event_id": f"lead-{n}",
        "occurred_at": at,
        "lead_id": f"L{n}",
        "deal_id": deal,
        "client": {"uniq_id": client, "name": None, "phones": kw.pop("phones", []), "emails": []},
        "metrica_client_id": kw.pop("cid", None),
        "yclid": None,
        "utm": None,
        "consent": True,
    }


def _status(
    eid: str, deal: str, client: str, status: str, at: datetime, **kw: Any
) -> dict[str, Any]:
    return {
        "event_id": eid,
        "occurred_at": at,
        "deal_id": deal,
        "client_uniq_id": client,
        "deal_created_at": NOW,
        "status": status,
        "revenue": kw.get("revenue"),
        "cost": None,
        "currency": None,
        "products": [],
        "version": kw.get("version"),
    }


def test_stream_reaches_metrica(
    bootstrap: str, topics: TopicFactory, sandbox: SandboxServer, tmp_path: Path, status_map: Path
) -> None:
    names = topics.crm_topics(3)
    codec = Codec.from_dir(PROJECT_ROOT / "schemas")
    env = service_env(
        bootstrap=bootstrap,
        sandbox_url=sandbox.url,
        store_url=f"sqlite:///{tmp_path / 'state.db'}",
        topics=names,
        status_map=status_map,
    )
    service = ServiceProcess(env, tmp_path / "service.log").start()
    try:

        def orders() -> dict[str, dict[str, Any]]:
            return {o["id"]: o for o in sandbox.orders(COUNTER)}

        with Producer({"bootstrap.servers": bootstrap}) as producer:

            def send(kind: str, schema: str, key: str, record: dict[str, Any]) -> None:
                producer.send(names[kind], key.encode(), codec.encode(schema, record))

            send(
                "lead-created",
                "crm.events.LeadCreated",
                "L1",
                _lead(1, "c1", "D1", NOW, cid="1712345678901234567", phones=["8 999 555 11 11"]),
            )
            producer.flush()
            # The deal events come once the lead is in: the late one must then be seen as stale.
            wait_until(lambda: "D1" in orders(), 60, "the lead's order")
            send(
                "deal-status-changed",
                "crm.events.DealStatusChanged",
                "D1",
                _status("s1", "D1", "c1", "qualified", NOW + timedelta(minutes=1), version=2),
            )
            send(
                "deal-status-changed",
                "crm.events.DealStatusChanged",
                "D1",
                _status(
                    "s2",
                    "D1",
                    "c1",
                    "won",
                    NOW + timedelta(minutes=2),
                    version=3,
                    revenue=Decimal("5000.00"),
                ),
            )
            send(
                "deal-status-changed",
                "crm.events.DealStatusChanged",
                "D1",  # late: older than s2
                _status("s0", "D1", "c1", "new", NOW + timedelta(seconds=30), version=1),
            )
            send(
                "deal-status-changed",
                "crm.events.DealStatusChanged",
                "D1",  # unmapped status
                _status("s3", "D1", "c1", "weird", NOW + timedelta(minutes=3), version=4),
            )
            producer.send(names["deal-status-changed"], b"D9", b"\x00garbage")
            # D2's client has no identity yet: parked until lead 2 arrives.
            send(
                "deal-status-changed",
                "crm.events.DealStatusChanged",
                "D2",
                _status("s20", "D2", "c2", "qualified", NOW + timedelta(minutes=1)),
            )
            producer.flush()

        wait_until(lambda: orders().get("D1", {}).get("order_status") == "won", 60, "D1 won")
        with Producer({"bootstrap.servers": bootstrap}) as producer:
            producer.send(
                names["lead-created"],
                b"L2",
                codec.encode(
                    "crm.events.LeadCreated",
                    _lead(2, "c2", None, NOW + timedelta(minutes=5), cid="99887766554433"),
                ),
            )
        wait_until(lambda: "D2" in orders(), 60, "parked D2 released")
        dlq = consume_all(bootstrap, names["deal-status-changed"] + ".dlq", 1, timeout=20)
    finally:
        code = service.terminate()
    logs = service.logs()
    assert code == 0, logs[-3000:]

    d1 = orders()["D1"]
    assert [h["order_status"] for h in d1["history"]] == ["new", "qualified", "won"]
    assert d1["revenue"] == 5000
    assert orders()["D2"]["order_status"] == "qualified"
    contacts = {c["uniq_id"]: c for c in sandbox.contacts(COUNTER)}
    assert contacts["c1"]["phones"] == ["79995551111"]
    assert contacts["c1"]["client_ids"] == ["1712345678901234567"]
    assert len(dlq) == 1
    headers = dict(dlq[0].headers)
    assert headers["dlq.error.class"] == b"decode_error"
    assert dlq[0].value == b"\x00garbage"
    assert dlq[0].key == b"D9"
    assert "79995551111" not in logs
    assert "555 11 11" not in logs
    assert TOKEN not in logs
    for line in logs.splitlines():  # one format for every line, librdkafka's included
        json.loads(line)
