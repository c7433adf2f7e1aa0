"""Schema ids the codec has not seen are asked of the registry off the event loop (issue 16,
item 8): the registry client is synchronous with a 5 s timeout, so asked from a round on the
loop it stalled every coroutine of the process (uploads, commits, lease renewals) meanwhile."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.requests import Request
from starlette.responses import Response

from metrica_bridge.codec import Codec, SchemaUnavailable, WireFormat
from metrica_bridge.codec.registry import RegistryClient
from metrica_bridge.codec.schemas import load_versions
from metrica_bridge.engine.intake import Intake
from metrica_bridge.engine.pipeline import Batching, Pipeline
from metrica_bridge.engine.work import Work
from metrica_bridge.events import EventKind, parse_event
from metrica_bridge.kafka.record import SourceRecord
from metrica_bridge.metrica.status_map import parse_status_map
from metrica_bridge.store import open_store
from metrica_bridge.store.base import Store
from tests.codec.records import LEAD, RECORDS, SCHEMAS_DIR
from tests.support.schema_registry import SchemaRegistryServer
from tests.support.stack import STATUS_MAP

TOPIC = "crm.leads"
HOLD_S = 3.0  # the registry's longest wait for the test to let it answer (below the 5 s timeout)
TICKS = 5  # ticks of another coroutine the registry waits for before it answers


class HeldRegistry(SchemaRegistryServer):
    """Holds every schema lookup until ``release`` is set (or ``HOLD_S`` passed): a slow
    registry whose answer depends on the rest of the process going on meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = threading.Event()
        self.release = threading.Event()
        self.released_in_time: list[bool] = []

    async def _get_schema(self, request: Request) -> Response:
        self.asked.set()
        self.released_in_time.append(await asyncio.to_thread(self.release.wait, HOLD_S))
        return await super()._get_schema(request)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


async def _nothing(*_: Any, **__: Any) -> None:
    return None


def _pipeline(store: Store, codec: Codec) -> Pipeline:
    return Pipeline(
        intake=Intake(codec, {EventKind.LEAD_CREATED: TOPIC}),
        store=store,
        statuses=parse_status_map(yaml.safe_load(STATUS_MAP)),
        send=_nothing,
        batching=Batching(max_records=100, max_bytes=1_000_000, linger_s=0.05),
        dead_letters=None,  # type: ignore[arg-type]  # nothing is dead-lettered here
        timezone="Europe/Moscow",
        owner="test-owner",
    )


def _work(registry_url: str) -> Work:
    record = RECORDS[LEAD][1]
    with Codec.from_dir(SCHEMAS_DIR, registry_url) as producer:  # registers the schema
        value = producer.encode(LEAD, record, WireFormat.CONFLUENT)
    key = parse_event(LEAD, record).key.encode()
    return Work(SourceRecord(TOPIC, 0, 0, key, value, (), None), f"lead:{key.decode()}")


async def test_a_round_with_an_unknown_schema_id_does_not_stall_the_loop(store: Store) -> None:
    with HeldRegistry() as registry, Codec.from_dir(SCHEMAS_DIR, registry.url) as codec:
        work = _work(registry.url)
        pipeline = _pipeline(store, codec)
        ticks_while_asked = 0

        async def ticker() -> None:
            # Another coroutine of the process: it lets the registry answer once it ticked
            # TICKS times while the lookup was outstanding, which it can only do if the round
            # left the loop free meanwhile.
            nonlocal ticks_while_asked
            while not registry.release.is_set():
                await asyncio.sleep(0.01)
                if registry.asked.is_set():
                    ticks_while_asked += 1
                    if ticks_while_asked >= TICKS:
                        registry.release.set()

        ticking = asyncio.create_task(ticker())
        try:
            await pipeline._start([work])
        finally:
            registry.release.set()
            await ticking
            await pipeline.close()

    # The registry was asked once, and answered because the loop went on ticking meanwhile
    # (on the loop, the round would have held it until the registry gave up waiting).
    assert registry.released_in_time == [True]
    assert work.event is not None
    assert work.poison is None


async def test_a_registry_outage_still_retries_the_record_later(store: Store) -> None:
    with SchemaRegistryServer() as registry:
        work = _work(registry.url)
        codec = Codec.from_dir(SCHEMAS_DIR, registry.url)
    # Stopped: the registry is unreachable now.
    with codec:
        pipeline = _pipeline(store, codec)
        try:
            await pipeline._start([work])
        finally:
            await pipeline.close()
    # Not parsed, not poison (never dead-lettered): back in its lane to be tried again.
    assert work.event is None
    assert work.poison is None
    assert work.attempts == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TimingOutRegistry(SchemaRegistryServer):
    """Fails every lookup after the caller's clock moved on by a whole timeout (5 s)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    async def _get_schema(self, request: Request) -> Response:
        self.clock.now += 5.0
        return await super()._get_schema(request)


def test_an_outage_learned_off_the_loop_is_answered_on_it_without_asking_again() -> None:
    """The outage backoff runs from when the failed lookup ended: one that waited out its
    timeout used to leave the backoff already over, so the decode on the loop asked again
    (and waited again) right after the lookup made off the loop."""
    clock = Clock()
    with TimingOutRegistry(clock) as registry:
        work = _work(registry.url)
        schema_id = int.from_bytes(work.source.value[1:5], "big")
        registry.fail_status = 503
        with Codec(
            load_versions(SCHEMAS_DIR),
            RegistryClient(registry.url, timeout_s=5.0),
            outage_backoff_s=1.0,
            clock=clock,
        ) as codec:
            assert codec.unresolved([work.source.value]) == {schema_id}
            codec.resolve({schema_id})  # in a worker thread, in the engine
            assert codec.unresolved([work.source.value]) == set()
            with pytest.raises(SchemaUnavailable):
                codec.decode(work.source.value)
            assert registry.lookups(schema_id) == 1
            clock.now += 1.5  # the backoff is over: the next round asks again
            assert codec.unresolved([work.source.value]) == {schema_id}
