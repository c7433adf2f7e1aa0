"""Structured logs of the real service, on a stream full of personal data: leads with phones,
emails and ClientIDs (the simulator's messy forms and hand-written ones), poison, a record Metrica
rejects with a 400, and a revoked token.

Every line is JSON; every line about an event names it (event_id, topic, partition, offset); no
phone in any of its forms, no email and never the token appear in the logs, the DLQ headers or
``/metrics``. The console format gets a smoke test.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from metrica_bridge import normalize
from metrica_bridge.codec import Codec
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.events import EventKind
from metrica_bridge.kafka.broker import free_port
from metrica_bridge.kafka.producer import Producer
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.simulate import SimulationConfig, generate, produce
from tests.ops.support import get, scrape
from tests.support import crm
from tests.support.kafka import TopicFactory, consume_all
from tests.support.stack import COUNTER, STATUS_MAP, TOKEN, ServiceProcess, service_env, wait_until

CODEC = Codec.from_dir(PROJECT_ROOT / "schemas")
LEAD, DEAL = "crm.events.LeadCreated", "crm.events.DealStatusChanged"
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
# Known to the counter when the service starts (its start-up check needs every status of the
# map), then gone from the counter while it runs: Metrica answers 400.
UNKNOWN_TO_METRICA = '  vip:       {id: vip, type: OTHER, humanized: "VIP"}\n'
PHONES = ["+7 (912) 345-67-89", "8 912 345 67 89", "8-912-345-6789", "+79123456789"]
EMAILS = [" Ivan.Petrov@Example.COM ", "ivan.petrov@example.com"]
CLIENT_ID = "1712345678901234567"
ABOUT_AN_EVENT = ("event_id", "topic", "partition", "offset")


def _lead(n: int, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": f"pii-lead-{n}",
        "occurred_at": NOW,
        "lead_id": f"PL{n}",
        "deal_id": f"PD{n}",
        "client": {"uniq_id": f"pc{n}", "name": "Иван", "phones": PHONES, "emails": EMAILS},
        "metrica_client_id": CLIENT_ID,
        "yclid": None,
        "utm": None,
        "consent": True,
    }
    record.update(overrides)
    return record


def _status(n: int, status: str) -> dict[str, Any]:
    return {
        "event_id": f"pii-status-{n}",
        "occurred_at": NOW + timedelta(minutes=5),
        "deal_id": f"PD{n}",
        "client_uniq_id": f"pc{n}",
        "deal_created_at": NOW,
        "status": status,
        "revenue": None,
        "cost": None,
        "currency": None,
        "products": [],
        "version": 2,
    }


def _forbidden(raw_phones: list[str], raw_emails: list[str]) -> set[str]:
    """Every form in which a phone or an email could leak."""
    out = {TOKEN}
    for raw in raw_phones:
        normal = normalize.phone(raw)
        if normal is None:
            continue  # not a phone (a typo the normaliser drops)
        out |= {raw.strip(), normal, normal[1:]}  # as written, E.164 digits, national digits
    for raw in raw_emails:
        normal = normalize.email(raw)
        if normal is not None:
            out |= {raw.strip(), normal}
    return out


def _leaks(text: str, forbidden: set[str]) -> list[str]:
    return sorted(f for f in forbidden if f in text)


def test_logs_are_json_name_their_event_and_carry_no_personal_data_or_token(
    bootstrap: str, topics: TopicFactory, tmp_path: Path
) -> None:
    names = topics.many({kind.value: 2 for kind in EventKind})
    dlqs = [f"{topic}.dlq" for topic in names.values()]
    topics.created.extend(dlqs)
    simulated = list(
        generate(
            SimulationConfig(
                count=300,
                seed=3,
                clients=80,
                duplicates=0.05,
                poison=0.05,
                topics={EventKind(k): v for k, v in names.items()},
            ),
            CODEC,
        )
    )
    raw_phones, raw_emails = list(PHONES), list(EMAILS)
    for message in simulated:
        if message.kind == "LeadCreated" and message.facts is not None:
            record = CODEC.decode(message.value).record
            raw_phones += record["client"]["phones"]
            raw_emails += record["client"]["emails"]
    forbidden = _forbidden(raw_phones, raw_emails)
    assert len(forbidden) > 100, "the simulated leads should carry many phones and emails"
    status_map = tmp_path / "status_map.yaml"
    status_map.write_text(STATUS_MAP + UNKNOWN_TO_METRICA)

    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], port=0) as sandbox:
        crm.push_status_map(sandbox.url, STATUS_MAP + UNKNOWN_TO_METRICA)
        env = service_env(
            # A dead broker too: librdkafka complains, through our logs. Without sparse
            # connections it connects to every bootstrap broker, so it always tries this one.
            bootstrap=f"127.0.0.1:{free_port()},{bootstrap}",
            kafka_enable_sparse_connections="false",
            sandbox_url=sandbox.url,
            store_url=f"sqlite:///{tmp_path / 'state.db'}",
            topics=names,
            status_map=status_map,
            log_level="DEBUG",  # duplicates and every other detail line too
            park_max_wait_s=3,
            shutdown_timeout_s=3,
        )
        service = ServiceProcess(env, tmp_path / "service.log").start()
        port = service.metrics_port
        try:
            wait_until(lambda: get(port, "/readyz")[0] == 200, 60, "ready")
            # Someone edits the counter's statuses in Metrica: "vip" is gone (nothing was sent
            # yet, so a reset loses nothing else).
            sandbox.reset()
            crm.push_status_map(sandbox.url)  # without "vip"
            with Producer({"bootstrap.servers": bootstrap}) as producer:
                produce(simulated, producer)
                leads, deals = names["lead-created"], names["deal-status-changed"]
                producer.send(leads, b"PL1", CODEC.encode(LEAD, _lead(1)))
                # Decodes, breaks the contract (empty lead id), and is full of personal data.
                producer.send(leads, b"PL2", CODEC.encode(LEAD, _lead(2, lead_id="")))
                # Undecodable bytes quoting a phone and an email.
                producer.send(
                    leads, b"PL3", b"\x00\x00\x00\x00\x07 +7 (912) 345-67-89 " + EMAILS[0].encode()
                )
                producer.flush()
                wait_until(
                    lambda: any(o["id"] == "PD1" for o in sandbox.orders(COUNTER)), 60, "PD1"
                )
                producer.send(deals, b"PD1", CODEC.encode(DEAL, _status(1, "vip")))

            def dead_letters() -> float:
                m = scrape(port)
                return m.value("dlq_records_total", error_class="rejected") if m else 0

            wait_until(lambda: dead_letters() == 1, 60, "the rejected record in the DLQ")
            # Then the token is revoked: a setup error on the next upload.
            sandbox.set_faults(reject_token=TOKEN)
            with Producer({"bootstrap.servers": bootstrap}) as producer:
                producer.send(leads, b"PL4", CODEC.encode(LEAD, _lead(4, deal_id=None)))
            wait_until(lambda: get(port, "/readyz")[1].startswith("setup error"), 30, "not ready")
            metrics = scrape(port)
            assert metrics is not None
            readyz = get(port, "/readyz")[1]
            dlq = consume_all(bootstrap, dlqs, int(metrics.value("dlq_records_total")), timeout=20)
        finally:
            assert service.terminate() == 0, service.logs()[-3000:]

    assert metrics.value("setup_error") == 1
    assert metrics.value("dlq_records_total", error_class="decode_error") >= 1
    assert metrics.value("dlq_records_total", error_class="invalid_event") >= 1
    assert metrics.value("identifiers_dropped_total") >= 1
    assert not _leaks(metrics.text, forbidden)
    assert not _leaks(readyz, forbidden)

    # DLQ: the original bytes are kept as they came; our headers carry no personal data.
    classes = set()
    for record in dlq:
        headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
        classes.add(headers["dlq.error.class"])
        ours = "\n".join(v for k, v in headers.items() if k.startswith("dlq."))
        assert not _leaks(ours, forbidden), headers
        if headers["dlq.error.class"] == "rejected":
            assert headers["dlq.error.message"].startswith("rejected by Metrica: "), headers
    assert {"decode_error", "invalid_event", "rejected"} <= classes

    text = service.logs()
    assert not _leaks(text, forbidden)
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    events: dict[str, int] = {}
    for line in lines:
        assert {"event", "level", "timestamp"} <= set(line), line
        if any(key in line for key in ABOUT_AN_EVENT if key != "topic"):
            assert all(key in line for key in ABOUT_AN_EVENT), line
            assert isinstance(line["partition"], int), line
            assert isinstance(line["offset"], int), line
            # Only a record that could not be read has no event id to give.
            if line["event_id"] is None:
                assert line.get("error_class") in ("decode_error", "invalid_event"), line
            events[line["event"]] = events.get(line["event"], 0) + 1
    for expected in ("dead-lettered", "parked until the client's identity arrives", "duplicate"):
        assert events.get(expected), (expected, events)
    assert any(line["level"] == "error" and "refuses the token" in line["event"] for line in lines)
    assert any(
        line["event"] == "dead-lettered" and line["error_class"] == "rejected" for line in lines
    )
    assert any(line.get("source") == "librdkafka" for line in lines), "librdkafka's own lines"


def test_console_format_is_readable_and_masked(
    bootstrap: str, topics: TopicFactory, tmp_path: Path
) -> None:
    names = topics.many({kind.value: 1 for kind in EventKind})
    topics.created.extend(f"{topic}.dlq" for topic in names.values())
    status_map = tmp_path / "status_map.yaml"
    status_map.write_text(STATUS_MAP)
    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], port=0) as sandbox:
        crm.push_status_map(sandbox.url)  # schema-sync first: the service waits for it
        env = service_env(
            bootstrap=bootstrap,
            sandbox_url=sandbox.url,
            store_url=f"sqlite:///{tmp_path / 'state.db'}",
            topics=names,
            status_map=status_map,
            log_format="console",
        )
        service = ServiceProcess(env, tmp_path / "service.log").start()
        try:
            wait_until(lambda: get(service.metrics_port, "/readyz")[0] == 200, 60, "ready")
            with Producer({"bootstrap.servers": bootstrap}) as producer:
                producer.send(
                    names["lead-created"], b"PL1", CODEC.encode(LEAD, _lead(1, deal_id=None))
                )
                producer.send(names["lead-created"], b"PL3", b"\x00 " + PHONES[0].encode())
            wait_until(lambda: "dead-lettered" in service.logs(), 30, "the poison logged")
        finally:
            assert service.terminate() == 0, service.logs()[-3000:]
    text = service.logs()
    assert not _leaks(text, _forbidden(PHONES, EMAILS))
    lines = text.splitlines()
    assert lines
    assert not [line for line in lines if line.lstrip().startswith("{")], "console, not JSON"
    assert not [line for line in lines if "\x1b[" in line], "no colour codes in a file"
    dead = next(line for line in lines if "dead-lettered" in line)
    # Readable: level, message, then key=value pairs naming the record.
    assert re.search(r"\[\s*warning\s*\]", dead), dead
    for key in ("topic=", "partition=", "offset=", "error_class=decode_error"):
        assert key in dead, dead
    assert any("running" in line for line in lines)
