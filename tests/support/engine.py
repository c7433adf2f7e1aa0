"""The engine in-process for tests: a real Pipeline on a real SQLite store, the sandbox over
HTTP, the DLQ on the embedded broker. Records are handed to it directly (no consumer), so a
test chooses exactly what arrives, in which order, with which keys and headers."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from metrica_bridge.codec import Codec
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.engine.intake import Intake
from metrica_bridge.engine.pipeline import Batching, Pipeline
from metrica_bridge.engine.work import Work
from metrica_bridge.events import EventKind
from metrica_bridge.kafka.admin import ensure_topics
from metrica_bridge.kafka.producer import Producer
from metrica_bridge.kafka.record import SourceRecord
from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.metrica.quota import QuotaGovernor
from metrica_bridge.metrica.status_map import parse_status_map
from metrica_bridge.sandbox import SandboxServer
from metrica_bridge.steps.batch import SendFn
from metrica_bridge.steps.dlq import DeadLetters
from metrica_bridge.steps.send import Sender
from metrica_bridge.store import open_store
from metrica_bridge.store.base import Store
from tests.support.kafka import TopicFactory
from tests.support.stack import COUNTER, STATUS_MAP, TOKEN

CODEC = Codec.from_dir(PROJECT_ROOT / "schemas")
OWNER = "test-owner"


@dataclass
class Engine:
    pipeline: Pipeline
    store: Any  # the Store, or a test's wrapper around it
    topics: dict[str, str]
    db: Path
    done: list[Work] = field(default_factory=list, repr=False)
    offsets: dict[str, int] = field(default_factory=dict)

    def feed(
        self,
        kind: str,
        key: str | bytes | None,
        value: bytes,
        ts_ms: int | None = None,
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> tuple[str, int]:
        """One record at the next offset of partition 0 of the kind's topic."""
        topic = self.topics[kind]
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        raw = key.encode() if isinstance(key, str) else key
        record = SourceRecord(topic, 0, offset, raw, value, headers, ts_ms)
        self.pipeline.intake.consume([record], self.done.append)
        return topic, offset

    async def settle(self, count: int, within_s: float = 30) -> None:
        """Until ``count`` fed records completed their offsets; names the missing ones."""
        deadline = time.monotonic() + within_s
        while len(self.done) < count:
            if time.monotonic() > deadline:
                handled = {(w.source.topic, w.source.offset) for w in self.done}
                missing = [
                    (t, o)
                    for t, n in self.offsets.items()
                    for o in range(n)
                    if (t, o) not in handled
                ]
                raise AssertionError(f"{len(self.done)} of {count} handled; {missing=}")
            await asyncio.sleep(0.02)

    async def ends(self, event_id: str, outcome: str, within_s: float = 30) -> None:
        """Released events complete no offset (theirs committed when they parked): the ledger."""
        deadline = time.monotonic() + within_s
        while (self.ledger().get(event_id) or ("",))[0] != outcome:
            assert time.monotonic() < deadline, self.ledger().get(event_id)
            await asyncio.sleep(0.05)

    def ledger(self) -> dict[str, tuple[str, str, str | None]]:
        """event id → (outcome, detail, uploading id)."""
        with sqlite3.connect(self.db) as conn:
            rows = conn.execute("SELECT event_id, outcome, detail, upload_id FROM ledger")
            return {r[0]: (r[1], r[2], r[3]) for r in rows}


@asynccontextmanager
async def running_engine(
    bootstrap: str,
    topics: TopicFactory,
    sandbox: SandboxServer,
    tmp_path: Path,
    wrap: Callable[[Store], Any] | None = None,
    linger_s: float = 0.02,
    wrap_send: Callable[[SendFn, Store], SendFn] | None = None,
) -> AsyncIterator[Engine]:
    """``wrap``: the pipeline talks to ``wrap(store)`` (a test's fault injection), the sender to
    the store itself. ``wrap_send``: every batch goes through ``wrap_send(sender, store)`` (a
    test acting between the pipeline and Metrica)."""
    names = topics.crm_topics(1)
    ensure_topics(bootstrap, {f"{name}.dlq": 1 for name in names.values()})
    real = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    store = wrap(real) if wrap is not None else real
    # Unpaced: the default budget spaces requests by what is left of the day (~18 s apart).
    governor = QuotaGovernor(requests_per_second=1_000, daily_budget=1_000_000)
    client = MetricaClient(
        api_url=sandbox.url, counter_id=COUNTER, token=SecretStr(TOKEN), governor=governor
    )
    producer = Producer({"bootstrap.servers": bootstrap})
    send: SendFn = Sender(client, real, OWNER)
    pipeline = Pipeline(
        intake=Intake(CODEC, {EventKind(k): v for k, v in names.items()}),
        store=store,
        statuses=parse_status_map(yaml.safe_load(STATUS_MAP)),
        send=send if wrap_send is None else wrap_send(send, real),
        batching=Batching(max_records=100, max_bytes=1_000_000, linger_s=linger_s),
        dead_letters=DeadLetters(producer),
        timezone="Europe/Moscow",
        owner=OWNER,
    )
    pipeline.start()
    try:
        yield Engine(pipeline, store, names, tmp_path / "state.db")
    finally:
        await pipeline.close()
        await client.aclose()
        producer.close(5)
        real.close()
