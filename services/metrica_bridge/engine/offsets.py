"""Contiguous offset tracking.

Events of one partition complete out of order (different keys run concurrently), but Kafka only
stores one committed offset per partition. We may commit offset N+1 only when every offset up to
and including N is fully handled, so a crash never skips an unfinished event.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

TopicPartition = tuple[str, int]


@dataclass(slots=True)
class _Partition:
    next_commit: int  # every consumed offset below this is handled
    outstanding: deque[int] = field(default_factory=deque)  # consumed, in offset order
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
        state = self._partitions.get((topic, partition))
        if state is None:
            state = self._partitions[(topic, partition)] = _Partition(next_commit=offset)
        last = state.outstanding[-1] if state.outstanding else state.next_commit - 1
        if offset <= last:
            raise ValueError(f"offset {offset} of {topic}[{partition}] is not after {last}")
        if not state.outstanding:
            # Nothing outstanding: offsets in between are not records we will ever see.
            state.next_commit = offset
        state.outstanding.append(offset)

    def complete(self, topic: str, partition: int, offset: int) -> None:
        state = self._partitions.get((topic, partition))
        if state is None or offset < state.next_commit or offset in state.finished:
            return  # revoked meanwhile, or completed twice: nothing to do
        state.finished.add(offset)
        outstanding = state.outstanding
        while outstanding and outstanding[0] in state.finished:
            done = outstanding.popleft()
            state.finished.discard(done)
            state.next_commit = done + 1

    def in_flight(self) -> int:
        return sum(len(p.outstanding) - len(p.finished) for p in self._partitions.values())

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
