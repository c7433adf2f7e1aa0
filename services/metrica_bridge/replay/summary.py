"""What a replay run did, by error class."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ClassCounts:
    replayed: int = 0  # in a dry run: would be replayed
    skipped: int = 0  # did not match the filters
    refused: int = 0  # replay cap reached

    def add(self, other: ClassCounts) -> None:
        self.replayed += other.replayed
        self.skipped += other.skipped
        self.refused += other.refused


@dataclass(frozen=True, slots=True)
class Refusal:
    """A record refused by the cap: where it sits in the DLQ, so an operator can look at it."""

    partition: int
    offset: int
    error_class: str
    replay_count: int
    original_topic: str
    key: str | None  # the entity id (deal or lead id), never personal data


@dataclass(slots=True)
class ReplaySummary:
    dlq_topic: str
    group_id: str
    dry_run: bool
    by_class: dict[str, ClassCounts] = field(default_factory=dict)
    refusals: list[Refusal] = field(default_factory=list)
    # Records read from the DLQ and handled (offsets this run advanced past, or would have).
    read: int = 0
    # Records to read, known once each partition's end was seen (None until then).
    total: int | None = None
    limit_reached: bool = False
    interrupted: bool = False
    elapsed_s: float = 0.0

    def counts(self, error_class: str) -> ClassCounts:
        return self.by_class.setdefault(error_class, ClassCounts())

    @property
    def replayed(self) -> int:
        return sum(c.replayed for c in self.by_class.values())

    @property
    def skipped(self) -> int:
        return sum(c.skipped for c in self.by_class.values())

    @property
    def refused(self) -> int:
        return sum(c.refused for c in self.by_class.values())

    @property
    def rate(self) -> float:
        return self.replayed / self.elapsed_s if self.elapsed_s > 0 else 0.0
