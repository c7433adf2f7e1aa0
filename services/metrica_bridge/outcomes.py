"""What became of an event: the one outcome the ledger records for it, and why a record went
to its dead-letter topic.

These values are written to the ledger, to ``dlq.error.class`` headers and to metric labels;
they live apart from :mod:`metrica_bridge.metrics` so the store, the steps and replay can name
them without the metrics registry.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """The one recorded outcome of every event (DESIGN.md §4)."""

    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    STALE = "stale"
    SKIPPED = "skipped"  # no-op update or unmapped status
    PARKED = "parked"
    DEAD_LETTERED = "dead_lettered"


class ErrorClass(StrEnum):
    """``dlq.error.class`` values (DESIGN.md §5)."""

    DECODE_ERROR = "decode_error"
    INVALID_EVENT = "invalid_event"
    REJECTED = "rejected"
    RETRY_EXHAUSTED = "retry_exhausted"
    UNATTRIBUTABLE = "unattributable"
