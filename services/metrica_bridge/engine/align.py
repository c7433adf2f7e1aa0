"""Event-time alignment: leads before the deal events after them, deal events before the
payments after them.

The topics are consumed independently, and on a backlog each consumer would run ahead on its
own: deal events would find no identity for their client yet and park, to be handled a second
time once the lead arrives (36-43 % of a backlog did, docs/benchmarks.md), and a payment handled
before the status changes that preceded it makes them stale, so a status with goals never
reaches Metrica. So the topics form a chain, in the CRM's causal order (lead-created,
deal-status-changed, payment-received), and a record is admitted only once every assigned
partition of the topics before its own has been consumed past its timestamp (Kafka's record
timestamp, the producer's clock): what the CRM produced before it upstream is then ahead of it
in the engine.

A chain, not every topic waiting for every other: the first topic waits for nothing, so it
always moves, and each later one waits only for topics that do. (Mutual waiting deadlocks: a
consumer paused at its in-flight limit with every record held stops the very partition the
other topic waits for. Partitions are not read evenly: a fetch returns whole producer batches.)

A partition at its end (``enable.partition.eof``) holds nothing back beyond the fetch latency
(``margin_s``). It is an optimisation only: nothing is held longer than ``max_hold_s`` (clock
skew between producers, a partition that stopped moving), and an upstream topic this process
has joined with no partition assigned holds nothing back. Until the upstream consumers have
joined their groups, everything downstream is held: at start-up the consumers join one by one,
and one that starts first would otherwise read its whole backlog ahead of the others.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from metrica_bridge.engine.offsets import TopicPartition
from metrica_bridge.engine.work import Work


@dataclass(slots=True)
class _Topic:
    joined: bool = False
    assigned: set[int] = field(default_factory=set)
    last_ts: dict[int, int] = field(default_factory=dict)  # partition -> its last record's time
    at_end: set[int] = field(default_factory=set)  # partitions whose last fetch reached the end
    # Held records per partition: in order within one (a deal's events stay in order), and one
    # partition read far ahead does not hold back another's admissible records behind it.
    held: dict[int, deque[Work]] = field(default_factory=dict)
    count: int = 0  # records held, all partitions


class Alignment:
    def __init__(self, chain: Sequence[str], *, margin_s: float, max_hold_s: float) -> None:
        """``chain``: the topics this process consumes, upstream first."""
        self._topics = {topic: _Topic() for topic in chain}
        self._upstream = {topic: list(chain[:i]) for i, topic in enumerate(chain)}
        self._margin_ms = margin_s * 1000
        self._max_hold_s = max_hold_s
        self._enabled = len(self._topics) > 1 and max_hold_s > 0

    def __len__(self) -> int:
        """Records held."""
        return sum(t.count for t in self._topics.values())

    def held(self, topic: str) -> int:
        state = self._topics.get(topic)
        return 0 if state is None else state.count

    # -- what the consumers report -----------------------------------------------------------
    def assigned(self, topic: str, tps: Iterable[TopicPartition]) -> None:
        state = self._topics.get(topic)
        if state is not None:
            state.joined = True
            state.assigned.update(p for _, p in tps)

    def revoked(self, topic: str, tps: Iterable[TopicPartition]) -> None:
        state = self._topics.get(topic)
        if state is None:
            return
        for _, partition in tps:
            state.assigned.discard(partition)
            state.last_ts.pop(partition, None)
            state.at_end.discard(partition)

    def at_end(self, topic: str, tps: Iterable[TopicPartition]) -> None:
        state = self._topics.get(topic)
        if state is not None:
            state.at_end.update(p for _, p in tps)

    # -- records -----------------------------------------------------------------------------
    def hold(self, work: Work) -> bool:
        """Note ``work`` as consumed; True if it must wait for the topics upstream."""
        source = work.source
        state = self._topics.get(source.topic)
        if state is None:
            return False
        state.at_end.discard(source.partition)
        if source.timestamp_ms is not None:
            state.last_ts[source.partition] = source.timestamp_ms
        if not self._enabled or not self._upstream[source.topic]:
            return False
        queue = state.held.get(source.partition)
        if not queue:
            if self._admissible(work, self._watermark_ms(source.topic, None)):
                return False
            queue = state.held[source.partition] = deque()
        queue.append(work)
        state.count += 1
        return True

    def release(self, now: float) -> list[Work]:
        """Held records that may go on now, in the order each topic's came."""
        out: list[Work] = []
        now_ms: float | None = None
        for topic, state in self._topics.items():
            if not state.held:
                continue
            if now_ms is None:
                now_ms = time.time() * 1000
            watermark = self._watermark_ms(topic, now_ms)
            for partition, held in list(state.held.items()):
                while held and (
                    self._admissible(held[0], watermark)
                    or held[0].consumed_at + self._max_hold_s <= now
                ):
                    out.append(held.popleft())
                    state.count -= 1
                if not held:
                    del state.held[partition]
        return out

    def drop(self, tps: set[TopicPartition]) -> list[Work]:
        dropped: list[Work] = []
        for topic, state in self._topics.items():
            for partition in [p for p in state.held if (topic, p) in tps]:
                gone = state.held.pop(partition)
                state.count -= len(gone)
                dropped.extend(gone)
        return dropped

    @staticmethod
    def _admissible(work: Work, watermark_ms: float) -> bool:
        ts = work.source.timestamp_ms
        return ts is None or ts <= watermark_ms

    def _watermark_ms(self, topic: str, now_ms: float | None) -> float:
        """Everything upstream up to this time (ms, producer clock) has been consumed."""
        lowest = float("inf")
        for name in self._upstream[topic]:
            state = self._topics[name]
            if not state.joined:
                return float("-inf")
            for partition in state.assigned:
                if partition in state.at_end:
                    if now_ms is None:
                        now_ms = time.time() * 1000
                    mark: float = now_ms - self._margin_ms
                else:
                    mark = state.last_ts.get(partition, float("-inf"))
                if mark < lowest:
                    lowest = mark
        return lowest
