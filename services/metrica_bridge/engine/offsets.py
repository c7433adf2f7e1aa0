"""Contiguous offset tracking.

Events of one partition complete out of order (different keys run concurrently), but Kafka only
stores one committed offset per partition. We may commit offset N+1 only when every offset up to
and including N is fully handled, so a crash never skips an unfinished event.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

TopicPartition = tuple[str, int]


@dataclass(slots=True)
class _Partition:
    next_commit: int  # every consumed offset below this is handled
    outstanding: deque[int] = field(default_factory=deque)  # consumed, in offset order
    consumed_at: deque[float] = field(default_factory=deque)  # monotonic, one per outstanding
    finished: set[int] = field(default_factory=set)  # handled, but behind an unhandled one
    committed: int | None = None  # last offset committed to Kafka


class OffsetTracker:
    """Tracks consumed and handled offsets per (topic, partition).

    ``add`` when a record is consumed, ``complete`` when it is handled; ``committable`` gives the
    offsets to commit (Kafka semantics: the next offset to read). Offsets of one partition arrive
    in increasing order; gaps between them (compaction, transaction markers) are skipped.
    """

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _Partition] = {}

    def revoke(self, topic: str, partition: int) -> None:
        self._partitions.pop((topic, partition), None)

    def partitions(self) -> list[TopicPartition]:
        return list(self._partitions)

    def add(self, topic: str, partition: int, offset: int) -> None:
        self.add_all([(topic, partition, offset)])

    def add_all(self, records: Iterable[tuple[str, int, int]]) -> None:
        """Track a consumed batch, all of it or (ValueError) none of it: a batch tracked in part
        would leave offsets outstanding that no one handles, and the partition never commits."""
        batch = list(records)
        now = time.monotonic()
        last: dict[TopicPartition, int] = {}
        for topic, partition, offset in batch:
            tp = (topic, partition)
            if tp not in last:
                state = self._partitions.get(tp)
                if state is None:
                    last[tp] = offset - 1
                else:
                    last[tp] = state.outstanding[-1] if state.outstanding else state.next_commit - 1
            if offset <= last[tp]:
                raise ValueError(f"offset {offset} of {topic}[{partition}] is not after {last[tp]}")
            last[tp] = offset
        for topic, partition, offset in batch:
            state = self._partitions.get((topic, partition))
            if state is None:
                state = self._partitions[(topic, partition)] = _Partition(next_commit=offset)
            if not state.outstanding:
                # Nothing outstanding: offsets in between are not records we will ever see.
                state.next_commit = offset
            state.outstanding.append(offset)
            state.consumed_at.append(now)

    def complete(self, topic: str, partition: int, offset: int) -> None:
        state = self._partitions.get((topic, partition))
        if state is None or offset < state.next_commit or offset in state.finished:
            return  # revoked meanwhile, or completed twice: nothing to do
        state.finished.add(offset)
        outstanding = state.outstanding
        while outstanding and outstanding[0] in state.finished:
            done = outstanding.popleft()
            state.consumed_at.popleft()
            state.finished.discard(done)
            state.next_commit = done + 1

    def in_flight(self) -> int:
        """Consumed and not handled yet."""
        return sum(len(p.outstanding) - len(p.finished) for p in self._partitions.values())

    def uncommittable(self) -> int:
        """Consumed and not committable: the unhandled ones and every handled one behind them.
        What backpressure counts: one offset that never ends holds its partition's commits,
        and consuming on behind it only grows what a restart would read again (issue 16)."""
        return sum(len(p.outstanding) for p in self._partitions.values())

    def oldest_unfinished_age(self, now: float | None = None) -> dict[TopicPartition, float]:
        """Seconds since the oldest unhandled offset of each partition was consumed (partitions
        with nothing outstanding are left out)."""
        at = time.monotonic() if now is None else now
        return {tp: at - p.consumed_at[0] for tp, p in self._partitions.items() if p.consumed_at}

    def in_flight_of(self, topic: str, partition: int) -> int:
        state = self._partitions.get((topic, partition))
        return len(state.outstanding) - len(state.finished) if state else 0

    def position(self, topic: str, partition: int) -> int | None:
        state = self._partitions.get((topic, partition))
        return state.next_commit if state else None

    def committable(self, only: set[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Offsets worth committing now: advanced since the last ``mark_committed``."""
        return {
            tp: p.next_commit
            for tp, p in self._partitions.items()
            if (only is None or tp in only) and (p.committed is None or p.next_commit > p.committed)
        }

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            state = self._partitions.get(tp)
            if state is not None:
                state.committed = max(offset, state.committed or 0)
