"""Per-key lanes: one item of a key at a time, in order; other keys side by side; retries keep
their place; dropped items are the not-started ones only."""

from __future__ import annotations

import random
from dataclasses import dataclass

from metrica_bridge.engine.lanes import Lanes


@dataclass(eq=False)
class Item:
    key: str
    n: int
    tp: int = 0
    started: bool = False


def test_one_head_per_key_in_order_and_every_key_side_by_side() -> None:
    lanes: Lanes[Item] = Lanes()
    rng = random.Random(5)
    items = [Item(f"k{rng.randrange(10)}", n) for n in range(500)]
    for item in items:
        lanes.push(item)
    seen: dict[str, list[int]] = {}
    rounds = 0
    while len(lanes):
        batch = lanes.take(1_000)
        assert len({i.key for i in batch}) == len(batch)  # never two of one key at once
        for item in batch:
            seen.setdefault(item.key, []).append(item.n)
        for item in batch:
            lanes.done(item)
        rounds += 1
    assert all(ns == sorted(ns) for ns in seen.values())
    assert sum(len(ns) for ns in seen.values()) == 500
    assert rounds == max(sum(1 for i in items if i.key == k) for k in seen)


def test_take_respects_the_limit_and_oldest_lanes_go_first() -> None:
    lanes: Lanes[Item] = Lanes()
    for n in range(5):
        lanes.push(Item(f"k{n}", n))
    assert [i.n for i in lanes.take(2)] == [0, 1]
    assert [i.n for i in lanes.take(10)] == [2, 3, 4]
    assert lanes.take(10) == []  # all started


def test_a_retried_head_keeps_its_place_until_its_time() -> None:
    lanes: Lanes[Item] = Lanes()
    first, second = Item("a", 1), Item("a", 2)
    lanes.push(first)
    lanes.push(second)
    [head] = lanes.take(10)
    assert head is first
    lanes.retry(first, not_before=100.0)
    assert lanes.take(10) == []  # its lane waits: nothing of "a" may overtake it
    assert lanes.wake(now=99.0) == 100.0
    assert lanes.take(10) == []
    lanes.wake(now=100.0)
    assert lanes.take(10) == [first]
    lanes.done(first)
    assert lanes.take(10) == [second]


def test_drop_forgets_only_items_not_started() -> None:
    lanes: Lanes[Item] = Lanes()
    running = Item("a", 1, tp=0)
    queued_same_key = Item("a", 2, tp=0)
    other_partition = Item("b", 3, tp=1)
    doomed_lane = Item("c", 4, tp=0)
    for item in (running, queued_same_key, other_partition, doomed_lane):
        lanes.push(item)
    assert lanes.take(1) == [running]
    dropped = lanes.drop(lambda i: i.tp == 0)
    assert set(map(id, dropped)) == {id(queued_same_key), id(doomed_lane)}
    assert len(lanes) == 2
    assert [i.n for i in lanes.take(10)] == [3]
    lanes.done(running)  # the running one finishes normally; its lane is empty now
    assert len(lanes) == 1
