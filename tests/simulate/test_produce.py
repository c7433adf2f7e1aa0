"""The simulator against the real broker: everything produced is read back, as described."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from metrica_bridge.codec import Codec, DecodeError, WireFormat
from metrica_bridge.config import Settings
from metrica_bridge.kafka.producer import Producer
from metrica_bridge.kafka.settings import producer_config
from metrica_bridge.simulate import Fate, SimulationConfig, generate, produce, read_manifest
from metrica_bridge.simulate.model import LEAD
from tests.support.kafka import ConsumedMessage, TopicFactory, consume_all
from tests.support.schema_registry import SchemaRegistryServer

CLI = Path(sys.executable).with_name("metrica-bridge")


def _read_back(settings: Settings, expected: int) -> list[ConsumedMessage]:
    return consume_all(
        settings.kafka_bootstrap_servers, list(settings.topics().values()), expected, timeout=30
    )


def _check_entity_keys(
    messages: list[ConsumedMessage], codec: Codec, unkeyed: frozenset[str | None] = frozenset()
) -> int:
    """Every decodable message is keyed by its entity id; returns how many decoded."""
    decoded = 0
    for message in messages:
        try:
            record = codec.decode(message.value)
        except DecodeError:
            continue
        decoded += 1
        entity = record.record["lead_id" if record.schema_name == LEAD else "deal_id"]
        if message.key is None:  # only the null_key poison, produced without its key on purpose
            assert codec.decode(message.value).record["event_id"] in unkeyed
            continue
        assert message.key == entity.encode()
    return decoded


def test_python_api_stream_is_read_back_whole(topics: TopicFactory, codec: Codec) -> None:
    settings = topics.crm_settings(partitions=3, dlq=False)
    config = SimulationConfig(
        count=1_500, seed=3, duplicates=0.05, late=0.05, poison=0.03, topics=settings.topics()
    )
    expected = list(generate(config, codec))
    with Producer.from_settings(settings) as producer:
        stats = produce(iter(expected), producer)
    assert stats.messages == len(expected) == 1_500
    assert stats.by_fate[Fate.DUPLICATE.value] == 75

    messages = _read_back(settings, len(expected))
    assert len(messages) == len(expected)
    assert Counter((m.topic, m.key, m.value) for m in messages) == Counter(
        (m.topic, m.key, m.value) for m in expected
    )
    good = sum(m.fate in (Fate.OK, Fate.LATE, Fate.DUPLICATE) for m in expected)
    invalid = sum(m.fate is Fate.INVALID_EVENT for m in expected)
    unkeyed = frozenset(m.event_id for m in expected if m.poison == "null_key")
    assert _check_entity_keys(messages, codec, unkeyed) == good + invalid
    # Per-entity order survives the trip: one key, one partition, emission order.
    by_key: dict[tuple[str, bytes | None], list[bytes | None]] = {}
    for message in messages:
        by_key.setdefault((message.topic, message.key), []).append(message.value)
    for sent in expected:
        if sent.key is not None and sent.fate is not Fate.DECODE_ERROR:
            assert by_key[(sent.topic, sent.key)].pop(0) == sent.value


def test_rate_paces_the_stream(topics: TopicFactory, codec: Codec) -> None:
    settings = topics.crm_settings(partitions=1, dlq=False)
    config = SimulationConfig(count=60, seed=4, topics=settings.topics())
    started = time.monotonic()
    with Producer(producer_config(settings)) as producer:
        stats = produce(generate(config, codec), producer, rate=100)
    # 60 messages at 100/s cannot take less than ~0.59 s (the first goes at t=0).
    assert time.monotonic() - started >= 0.55
    assert stats.messages == 60
    assert len(_read_back(settings, 60)) == 60


def _run_cli(settings: Settings, *args: str, registry: str | None = None) -> str:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "TOPIC_LEAD_CREATED": settings.topic_lead_created,
        "TOPIC_DEAL_STATUS_CHANGED": settings.topic_deal_status_changed,
        "TOPIC_PAYMENT_RECEIVED": settings.topic_payment_received,
        "LOG_FORMAT": "console",
    }
    env.pop("SCHEMA_REGISTRY_URL", None)
    if registry:
        env["SCHEMA_REGISTRY_URL"] = registry
    result = subprocess.run(
        [str(CLI), "simulate", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_cli_produces_what_its_manifest_says(
    topics: TopicFactory, codec: Codec, tmp_path: Path
) -> None:
    settings = topics.crm_settings(partitions=2, dlq=False)
    manifest = tmp_path / "manifest.jsonl"
    out = _run_cli(
        settings,
        *("--count", "800", "--seed", "21", "--duplicates", "0.05", "--late", "0.05"),
        *("--poison", "0.05", "--old", "0.1", "--manifest", str(manifest)),
    )
    assert "seed 21" in out
    lines = list(read_manifest(manifest.read_text(encoding="utf-8").splitlines()))
    assert len(lines) == 800
    messages = _read_back(settings, len(lines))
    assert len(messages) == len(lines)
    assert Counter((m.topic, None if m.key is None else m.key.decode()) for m in messages) == (
        Counter((line["topic"], line["key"]) for line in lines)
    )
    decoded_ids: Counter[str | None] = Counter()
    for message in messages:
        try:
            decoded_ids[codec.decode(message.value).record["event_id"]] += 1
        except DecodeError:
            decoded_ids[None] += 1
    expected_ids = Counter(
        None if line["fate"] == Fate.DECODE_ERROR else line["event_id"] for line in lines
    )
    assert decoded_ids == expected_ids
    unkeyed = frozenset(line["event_id"] for line in lines if line["key"] is None)
    _check_entity_keys(messages, codec, unkeyed)


def test_cli_confluent_wire_through_a_registry(topics: TopicFactory, tmp_path: Path) -> None:
    settings = topics.crm_settings(partitions=1, dlq=False)
    with SchemaRegistryServer() as registry:
        _run_cli(
            settings,
            *("--count", "200", "--seed", "8", "--wire", "confluent", "--no-create-topics"),
            registry=registry.url,
        )
        with Codec.from_dir(settings.schemas_dir, registry.url) as codec:
            messages = _read_back(settings, 200)
            assert len(messages) == 200
            assert all(m.value and m.value[0] == 0 for m in messages)
            assert _check_entity_keys(messages, codec) == 200
            assert {codec.decode(m.value).wire for m in messages} == {WireFormat.CONFLUENT}


def test_cli_reports_an_unreachable_broker() -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "KAFKA_MESSAGE_TIMEOUT_MS": "1000",
    }
    result = subprocess.run(
        [str(CLI), "simulate", "--count", "5", "--seed", "1", "--no-create-topics"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "simulate failed" in result.stderr
    assert "5 failed" in result.stderr


def test_manifest_is_json_lines(tmp_path: Path) -> None:
    line = {"topic": "t", "key": None, "event_id": None, "fate": "decode_error"}
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(line) + "\n\n", encoding="utf-8")
    assert list(read_manifest(path.read_text(encoding="utf-8").splitlines())) == [line]
