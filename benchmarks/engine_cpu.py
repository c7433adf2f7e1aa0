"""``python -m benchmarks.engine_cpu [EVENTS]``: the engine's CPU per event, in one process.

The pipeline with the real SQLite store works through a simulated stream fed straight into its
intake: no broker, no HTTP (every upload is acknowledged at once), no sweeper. What is left is
what the engine and the store cost per event, measured as the process's CPU time, which the
host's other load disturbs far less than end-to-end throughput (the ``engine`` scenario of
``benchmarks.run``; docs/benchmarks.md). Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from metrica_bridge.codec import Codec
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.engine.intake import Intake
from metrica_bridge.engine.pipeline import Batching, Pipeline
from metrica_bridge.engine.work import Work
from metrica_bridge.events import EventKind
from metrica_bridge.kafka.record import SourceRecord
from metrica_bridge.logs import configure
from metrica_bridge.metrica.status_map import parse_status_map
from metrica_bridge.simulate import SimulationConfig, generate
from metrica_bridge.steps.batch import Ack, Endpoint, Pending
from metrica_bridge.store import open_store

TOPICS = {
    EventKind.LEAD_CREATED: "leads",
    EventKind.DEAL_STATUS_CHANGED: "deals",
    EventKind.PAYMENT_RECEIVED: "payments",
}
PARTITIONS = 6
FEED = 2_000  # records per consumed batch, as a poll hands them over
AHEAD = 6_000  # records fed beyond those finished (the in-flight limit's role)
STALL_S = 300.0  # no run takes this long for a batch: the engine is stuck, say so


def _records(events: int, codec: Codec) -> list[SourceRecord]:
    config = SimulationConfig(
        count=events, seed=3, clients=5_000, late=0.1, duplicates=0.02, topics=TOPICS
    )
    offsets: dict[tuple[str, int], int] = {}
    records = []
    for message in generate(config, codec):
        partition = sum(message.key or b"") % PARTITIONS
        offset = offsets.get((message.topic, partition), 0)
        offsets[(message.topic, partition)] = offset + 1
        records.append(
            SourceRecord(message.topic, partition, offset, message.key, message.value, (), None)
        )
    return records


class _Finished:
    """Counts finished events (their offsets would complete); wakes whoever waits for more."""

    def __init__(self) -> None:
        self.count = 0
        self._more = asyncio.Event()

    def __call__(self, work: Work) -> None:
        self.count += 1
        self._more.set()

    async def until(self, count: int) -> None:
        while self.count < count:
            self._more.clear()
            await self._more.wait()


async def measure(events: int) -> dict[str, Any]:
    codec = Codec.from_dir(PROJECT_ROOT / "schemas")
    records = _records(events, codec)
    uploads = 0

    async def send(endpoint: Endpoint, batch: list[Pending]) -> None:
        nonlocal uploads
        uploads += 1
        ack = Ack(f"u{uploads}", len(batch), time.time())
        for pending in batch:
            pending.result = ack

    statuses = parse_status_map(
        yaml.safe_load((PROJECT_ROOT / "deploy" / "status_map.example.yaml").read_text())
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'state.db'}")
        intake = Intake(codec, TOPICS)
        pipeline = Pipeline(
            intake=intake,
            store=store,
            statuses=statuses,
            send=send,
            batching=Batching(max_records=1_000, max_bytes=5_000_000, linger_s=0.2),
            dead_letters=None,  # type: ignore[arg-type]  # the stream holds no poison
            timezone="Europe/Moscow",
            owner="engine-bench",
        )
        finished = _Finished()
        pipeline.start()
        started, cpu = time.monotonic(), time.process_time()
        for i in range(0, len(records), FEED):
            intake.consume(records[i : i + FEED], finished)
            await asyncio.wait_for(finished.until(i - AHEAD), STALL_S)
        await asyncio.wait_for(finished.until(len(records)), STALL_S)
        wall, cpu = time.monotonic() - started, time.process_time() - cpu
        await pipeline.close()
        store.close()
    return {
        "events": len(records),
        "seconds": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cpu_per_event_us": round(1e6 * cpu / len(records), 1),
        "uploads": uploads,
    }


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 60_000
    configure("WARNING", "json", sys.stderr)  # stdout is the result's
    print(json.dumps(asyncio.run(measure(events))))


if __name__ == "__main__":
    main()
