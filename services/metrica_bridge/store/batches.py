"""Keys as the store's statements take them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def unique(items: Iterable[str]) -> list[str]:
    """Distinct, sorted: a stable lock order across processes avoids deadlocks."""
    return sorted(set(items))
