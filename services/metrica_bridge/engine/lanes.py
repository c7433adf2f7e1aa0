"""Per-key ordered lanes.

Work with the same key runs strictly one after another, in submission order; work with different
keys runs side by side. This keeps one deal's updates in order while thousands of other deals
proceed. Nothing here runs anything: the engine takes the heads that are free to start
(:meth:`Lanes.take`), and tells the lanes when one is done (:meth:`Lanes.done`) or must try again
later (:meth:`Lanes.retry`). Everything is O(1) per item, so a backlog of tens of thousands of
waiting events costs nothing while it waits.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar


class Item(Protocol):
    key: str
    started: bool


W = TypeVar("W", bound=Item)


class Lanes(Generic[W]):
    def __init__(self) -> None:
        self._lanes: dict[str, deque[W]] = {}
        self._ready: deque[str] = deque()  # keys whose head may start now
        self._later: list[tuple[float, int, str]] = []  # (not before, tie, key): heads retrying
        self._tie = itertools.count()
        self._count = 0

    def __len__(self) -> int:
        """Items in the lanes, started or not."""
        return self._count

    def ready(self) -> int:
        return len(self._ready)

    def push(self, item: W) -> None:
        lane = self._lanes.get(item.key)
        if lane is None:
            self._lanes[item.key] = deque((item,))
            self._ready.append(item.key)
        else:
            lane.append(item)
        self._count += 1

    def take(self, limit: int) -> list[W]:
        """Up to ``limit`` lane heads, marked started, oldest lanes first."""
        taken: list[W] = []
        ready, lanes = self._ready, self._lanes
        while ready and len(taken) < limit:
            lane = lanes.get(ready.popleft())
            if lane is None:
                continue  # emptied by drop()
            head = lane[0]
            if not head.started:
                head.started = True
                taken.append(head)
        return taken

    def done(self, item: W) -> None:
        """``item`` (a started head) is finished: its lane's next item may start."""
        lane = self._lanes.get(item.key)
        if lane is None or not lane or lane[0] is not item:
            return  # dropped meanwhile
        lane.popleft()
        self._count -= 1
        if lane:
            self._ready.append(item.key)
        else:
            del self._lanes[item.key]

    def retry(self, item: W, not_before: float) -> None:
        """``item`` (a started head) goes back to waiting, first in its lane, until then."""
        item.started = False
        heapq.heappush(self._later, (not_before, next(self._tie), item.key))

    def wake(self, now: float) -> float | None:
        """Heads whose retry time has come become ready; returns when the next one is due."""
        later = self._later
        while later and later[0][0] <= now:
            _, _, key = heapq.heappop(later)
            if key in self._lanes:
                self._ready.append(key)
        return later[0][0] if later else None

    def drop(self, doomed: Callable[[W], bool]) -> list[W]:
        """Forget every item not started for which ``doomed`` holds; return them."""
        dropped: list[W] = []
        for key in list(self._lanes):
            lane = self._lanes[key]
            kept = deque(item for item in lane if item.started or not doomed(item))
            if len(kept) == len(lane):
                continue
            dropped.extend(item for item in lane if not item.started and doomed(item))
            if kept:
                self._lanes[key] = kept
                if not kept[0].started:
                    self._ready.append(key)  # harmless if it is there already
            else:
                del self._lanes[key]
        self._count -= len(dropped)
        return dropped

    def items(self) -> Iterator[W]:
        for lane in self._lanes.values():
            yield from lane
