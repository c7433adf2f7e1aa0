"""What one replay run does: the DLQ to read, the filters, the pace, the cap."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from metrica_bridge.config import Settings

DEFAULT_MAX_REPLAYS = 3


def replay_group_id(settings: Settings, dlq_topic: str) -> str:
    """The replay's own consumer group: never shared with the service's consumers."""
    return f"{settings.consumer_group_prefix}.replay.{dlq_topic}"


def parse_when(text: str, *, end_of_day: bool = False) -> datetime:
    """An ISO 8601 date or datetime, as an aware UTC datetime.

    A datetime without an offset is UTC. A bare date is its midnight (UTC), or with
    ``end_of_day`` the next midnight, so ``--until 2024-05-01`` includes all of May 1st.
    """
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            midnight = datetime.combine(day, time(0), tzinfo=UTC)
            return midnight + timedelta(days=1) if end_of_day else midnight
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 date or datetime (e.g. 2024-05-01 or "
            "2024-05-01T12:30:00Z)"
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """One run of ``metrica-bridge replay``; see the README's "Replay runbook".

    ``since <= dlq.failed.at < until``. ``error_classes`` empty means every class.
    ``limit`` counts records replayed (None: no limit); ``rate`` is records per second
    (0: as fast as the broker acknowledges). ``from_beginning`` ignores the group's committed
    position and reads the DLQ from its first record (a real run then commits as usual).
    """

    dlq_topic: str
    error_classes: frozenset[str] = field(default_factory=frozenset)
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None
    rate: float = 0.0
    dry_run: bool = False
    max_replays: int = DEFAULT_MAX_REPLAYS
    from_beginning: bool = False
    # How long to wait for the group to hand us the DLQ's partitions.
    assign_timeout_s: float = 60.0
    # Fallback end-of-DLQ detection: this long without a record nor an end-of-partition event
    # after assignment means caught up (see the runbook: EOF is the normal signal).
    idle_timeout_s: float = 10.0
    # Broker metadata and commit timeouts.
    request_timeout_s: float = 15.0

    def __post_init__(self) -> None:
        if not self.dlq_topic:
            raise ValueError("the DLQ topic is empty")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be at least 1")
        if self.rate < 0:
            raise ValueError("rate must be >= 0")
        if self.max_replays < 1:
            raise ValueError("max_replays must be at least 1")
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be earlier than until")
