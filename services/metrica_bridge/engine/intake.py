"""Where work waits until a round takes it, and what the runners and the sweeper ask about it.

Records come in from the consumers (held back by the event-time alignment,
:mod:`~metrica_bridge.engine.align`, while the topics upstream catch up) and from the park
sweeper (released parked events); each waits in its deal's or lead's lane
(:mod:`~metrica_bridge.engine.lanes`). A record is parsed only when a round takes it: until then
it costs its bytes, not a validated model (ten times more). The pipeline takes lane heads
(:meth:`Intake.take`), and gives each back when it is done or must wait (:meth:`Intake.done`,
:meth:`Intake.back`). Partition questions (what is running, drop, abandon) are answered here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping

from metrica_bridge.codec import Codec, SchemaUnavailable
from metrica_bridge.engine.align import Alignment
from metrica_bridge.engine.lanes import Lanes
from metrica_bridge.engine.offsets import TopicPartition
from metrica_bridge.engine.work import Done, Work, parked_source
from metrica_bridge.events import Event, EventKind
from metrica_bridge.kafka.record import SourceRecord
from metrica_bridge.steps.parse import parse, resolve_schemas
from metrica_bridge.store.base import ParkedEvent

Failed = Callable[[Work, Exception], None]


class Intake:
    def __init__(
        self, codec: Codec, topics: Mapping[EventKind, str], alignment: Alignment | None = None
    ) -> None:
        self.codec = codec
        self.kinds = {topic: kind for kind, topic in topics.items()}
        # Not `alignment or ...`: an Alignment holding nothing is falsy (it has a length).
        self.alignment = (
            alignment if alignment is not None else Alignment((), margin_s=0, max_hold_s=0)
        )
        self._lanes: Lanes[Work] = Lanes()
        self._active: set[Work] = set()  # taken, not yet done
        self._released = 0  # released parked events waiting or running
        self._wake = asyncio.Event()

    # -- in ------------------------------------------------------------------------------------
    def consume(self, records: Iterable[SourceRecord], on_done: Done) -> None:
        """Records just consumed, in partition order."""
        now = time.monotonic()
        alignment, kinds = self.alignment, self.kinds
        for source in records:
            work = Work(source, _lane(source, kinds), consumed_at=now, on_done=on_done)
            if not alignment.hold(work):
                self._lanes.push(work)
        self._wake.set()

    def release(
        self,
        parked: ParkedEvent,
        event: Event | None,
        expired: str | None,
        *,
        creation_waited: bool = False,
    ) -> None:
        """A parked event moves on: what it waited for arrived (``event`` parsed again), or it
        waited too long (``expired`` says why; ``creation_waited``: it waited its whole time for
        the deal's creation time, and the order is created by rule). Ordered behind live events
        of its deal; not tracked, since its offset was committed when it was parked."""
        work = Work(
            parked_source(parked),
            f"deal:{parked.deal_id}",
            event,
            released=True,
            expired=expired,
            parked_id=parked.event_id,
            creation_waited=creation_waited,
            deal_created_at=parked.deal_created_at,
        )
        if event is None and expired is None:
            work.expired = "the parked record can no longer be read"
        self._released += 1
        self._lanes.push(work)
        self._wake.set()

    async def resolve_parked(self, parked: Iterable[ParkedEvent]) -> None:
        """Ask the registry (off the loop) for schemas of parked records the codec lacks."""
        await resolve_schemas(self.codec, (parked_source(p) for p in parked))

    def parse_parked(self, parked: ParkedEvent) -> Event | None:
        """The parked record read again (it was valid when it parked)."""
        parsed = parse(self.codec, self.kinds, parked_source(parked))
        return None if isinstance(parsed, tuple) else parsed

    # -- rounds --------------------------------------------------------------------------------
    def take(self, limit: int) -> list[Work]:
        """Up to ``limit`` lane heads free to start (held records whose time came join first)."""
        now = time.monotonic()
        for work in self.alignment.release(now):
            self._lanes.push(work)
        self._lanes.wake(now)
        taken = self._lanes.take(limit) if limit > 0 else []
        self._active.update(taken)
        return taken

    async def parse(self, taken: list[Work], unavailable: Failed, failed: Failed) -> list[Work]:
        """Parse what is not parsed yet; schema ids the codec has not seen are asked of the
        registry off the loop (issue 16). A record whose schema cannot be had now goes to
        ``unavailable``, one whose parsing raised to ``failed``; the rest are returned."""
        fresh = [w for w in taken if w.event is None and w.poison is None and w.expired is None]
        await resolve_schemas(self.codec, (w.source for w in fresh))
        left_out: set[Work] = set()
        for work in fresh:
            try:
                parsed = parse(self.codec, self.kinds, work.source)
            except SchemaUnavailable as exc:
                unavailable(work, exc)
                left_out.add(work)
                continue
            except Exception as exc:  # this record's fault, or a bug: it alone waits
                failed(work, exc)
                left_out.add(work)
                continue
            if isinstance(parsed, tuple):
                work.poison = parsed
            else:
                work.event = parsed
        return [w for w in taken if w not in left_out] if left_out else taken

    def running(self) -> int:
        return len(self._active)

    def done(self, work: Work) -> None:
        """Finished: its lane moves on."""
        self._active.discard(work)
        self._lanes.done(work)
        if work.released:
            self._released -= 1

    def back(self, work: Work, delay: float) -> None:
        """Back to its lane, first in it, to start again after ``delay``."""
        self._active.discard(work)
        self._lanes.retry(work, time.monotonic() + delay)

    def wake(self) -> None:
        self._wake.set()

    async def idle(self, timeout_s: float) -> None:
        """Until something comes in, or ``timeout_s``."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)

    # -- what the runners and the sweeper ask --------------------------------------------------
    def assigned(self, topic: str, tps: Iterable[TopicPartition]) -> None:
        self.alignment.assigned(topic, tps)

    def revoked(self, topic: str, tps: Iterable[TopicPartition]) -> None:
        self.alignment.revoked(topic, tps)

    def at_end(self, topic: str, tps: Iterable[TopicPartition]) -> None:
        """These partitions were read to their end (the alignment stops waiting for them)."""
        self.alignment.at_end(topic, tps)

    def held(self, topic: str) -> int:
        """Records of the topic the alignment holds back (they count for backpressure)."""
        return self.alignment.held(topic)

    def drop(self, tps: set[TopicPartition]) -> int:
        """Forget work of these partitions not started yet (its records are handed back)."""
        dropped = self._lanes.drop(lambda w: w.tp in tps) + self.alignment.drop(tps)
        self._released -= sum(1 for w in dropped if w.released)
        return len(dropped)

    def busy(self, tps: set[TopicPartition]) -> int:
        return sum(1 for w in self._active if w.tp in tps)

    def abandon(self, tps: set[TopicPartition]) -> int:
        """Work of these partitions still running goes on, but no longer completes an offset
        (the partition has moved on); its outcome is still recorded when it ends."""
        abandoned = [w for w in self._active if w.tp in tps]
        for work in abandoned:
            work.on_done = None
        return len(abandoned)

    async def wait_done(self, tps: set[TopicPartition], within_s: float) -> bool:
        """Wait until no work of these partitions is running; False if it took too long."""
        deadline = time.monotonic() + within_s
        while self.busy(tps):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def released_in_progress(self) -> int:
        return self._released


def _lane(source: SourceRecord, kinds: Mapping[str, EventKind]) -> str:
    """The lane, from the record key (the entity id, DESIGN.md §2): one deal's status changes
    and payments share a lane, and so do the records of one lead. A lead that opens a deal
    meets that deal's events through the order's claim."""
    if source.key is None:
        return f"@{source.topic}:{source.partition}:{source.offset}"
    key = source.key.decode("utf-8", "replace")
    return f"lead:{key}" if kinds.get(source.topic) is EventKind.LEAD_CREATED else f"deal:{key}"
