"""A park sweep that fails part-way (issue 16, item 7): the events it could not hand to the
engine are not left leased (the heartbeat would renew their lease forever); the next sweep
takes them again. Real SQLite store; the Schema Registry's outage is a codec that raises."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from metrica_bridge.codec import Codec, SchemaUnavailable
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.engine.leases import PARK_LEASE_S as LEASE_S
from metrica_bridge.engine.parking import ParkSweeper
from metrica_bridge.engine.work import parked_source
from metrica_bridge.events import Event, EventKind
from metrica_bridge.steps.parse import parse, resolve_schemas
from metrica_bridge.store import IdentityUpdate, ParkedEvent, Store, StoreError, open_store
from metrica_bridge.store.base import Changes
from tests.support import crm

CODEC = Codec.from_dir(PROJECT_ROOT / "schemas")
TOPIC = "deals"
NOW = datetime.now(UTC).replace(microsecond=0)
LONG_AGO = NOW - timedelta(days=30)  # nothing expires: the wait is a year


def _value(n: int) -> bytes:
    record: dict[str, Any] = {
        "event_id": f"e{n}",
        "occurred_at": NOW - timedelta(hours=1, minutes=-n),
        "deal_id": f"D{n}",
        "client_uniq_id": "C1",
        "deal_created_at": NOW - timedelta(hours=2),
        "status": "won",
        "revenue": Decimal("500.00"),
        "cost": None,
        "currency": None,
        "products": [],
        "version": n,
    }
    return CODEC.encode(crm.DEAL, record)


def _parked(n: int) -> ParkedEvent:
    return ParkedEvent(
        event_id=f"e{n}",
        topic=TOPIC,
        partition=0,
        offset=n,
        key=f"D{n}".encode(),
        value=_value(n),
        headers=(),
        client_uniq_id="C1",
        deal_id=f"D{n}",
        occurred_at=NOW - timedelta(hours=1, minutes=-n),
        version=n,
        parked_at=NOW - timedelta(minutes=5),
    )


class RegistryDownFor:
    """The real codec, except that the registry cannot be asked for these values."""

    def __init__(self, *values: bytes) -> None:
        self._down = set(values)

    def decode(self, value: bytes) -> Any:
        if value in self._down:
            raise SchemaUnavailable("schema registry unreachable")
        return CODEC.decode(value)

    def __getattr__(self, name: str) -> Any:
        return getattr(CODEC, name)


class IdentitiesDown:
    def __init__(self, store: Store) -> None:
        self._store = store

    def identities(self, client_uniq_ids: Any) -> Any:
        raise StoreError("store identities failed: OperationalError")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    store.merge_identities([IdentityUpdate("C1", client_ids=("123",))])
    store.apply(Changes(park=[_parked(n) for n in (1, 2, 3)]))
    yield store
    store.close()


def _sweeper(store: Any, codec: Any) -> tuple[ParkSweeper, list[str]]:
    """The sweeper with the pipeline's side played here: records read with ``codec``."""
    released: list[str] = []
    kinds = {TOPIC: EventKind.DEAL_STATUS_CHANGED}

    async def resolve_parked(parked: list[ParkedEvent]) -> None:
        await resolve_schemas(codec, (parked_source(p) for p in parked))

    def parse_parked(parked: ParkedEvent) -> Event | None:
        parsed = parse(codec, kinds, parked_source(parked))
        return None if isinstance(parsed, tuple) else parsed

    intake = SimpleNamespace(
        resolve_parked=resolve_parked,
        parse_parked=parse_parked,
        release=lambda parked, *args, **kw: released.append(parked.event_id),
        released_in_progress=lambda: 0,
    )
    sweeper = ParkSweeper(intake, store, [TOPIC], owner="me", max_wait_s=365 * 86_400)  # type: ignore[arg-type]
    return sweeper, released


def _take_again(store: Store, owner: str = "other") -> list[str]:
    taken = store.take_ready_parked([TOPIC], owner, LEASE_S, LONG_AGO, 100)
    return [p.event_id for p in taken]


async def test_an_event_the_registry_cannot_read_now_is_unleased_and_the_rest_released(
    store: Store,
) -> None:
    sweeper, released = _sweeper(store, RegistryDownFor(_value(2)))
    assert await sweeper.sweep() == 3
    assert released == ["e1", "e3"]  # the one after the failure too
    assert store.renew_claims("me", LEASE_S) == 0
    # e2's lease ended at once: the next sweep (any process) takes it; e1 and e3 stay leased
    assert _take_again(store) == ["e2"]


async def test_the_store_failing_mid_sweep_leaves_nothing_leased(store: Store) -> None:
    sweeper, released = _sweeper(IdentitiesDown(store), CODEC)
    with pytest.raises(StoreError):
        await sweeper.sweep()
    assert released == []
    assert _take_again(store) == ["e1", "e2", "e3"]
