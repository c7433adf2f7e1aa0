"""``metrica-bridge replay``: re-publish dead-lettered records to their original topic
(DESIGN.md §5). :func:`replay` is the Python API; :mod:`.command` is the CLI."""

from metrica_bridge.replay.options import ReplayOptions, parse_when, replay_group_id
from metrica_bridge.replay.run import (
    BrokerUnavailable,
    DeliveryFailed,
    ReplayBusy,
    ReplayError,
    UnknownTopic,
    replay,
)
from metrica_bridge.replay.summary import ClassCounts, Refusal, ReplaySummary

__all__ = [
    "BrokerUnavailable",
    "ClassCounts",
    "DeliveryFailed",
    "Refusal",
    "ReplayBusy",
    "ReplayError",
    "ReplayOptions",
    "ReplaySummary",
    "UnknownTopic",
    "parse_when",
    "replay",
    "replay_group_id",
]
