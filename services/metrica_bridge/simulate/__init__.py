"""``metrica-bridge simulate``: a seeded CRM event generator (see :mod:`.model`)."""

from metrica_bridge.simulate.model import (
    Fate,
    SimulatedMessage,
    SimulationConfig,
    Story,
    generate,
)
from metrica_bridge.simulate.runner import Stats, produce, read_manifest, with_manifest

__all__ = [
    "Fate",
    "SimulatedMessage",
    "SimulationConfig",
    "Stats",
    "Story",
    "generate",
    "produce",
    "read_manifest",
    "with_manifest",
]
