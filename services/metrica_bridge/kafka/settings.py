"""librdkafka properties for the clients we create, layered: our defaults < ``KAFKA_*`` < code.

``Settings.kafka_common()`` carries the bootstrap servers and every ``KAFKA_<PROPERTY>``
override from the environment; the operator's overrides win over our defaults, and explicit
arguments in code (a test, a CLI flag) win over both.
"""

from __future__ import annotations

from collections.abc import Mapping

from metrica_bridge.config import Settings

# acks=all + idempotence: no duplicates or reordering from producer retries. lz4 is cheap on
# CPU and supported by Kafka and tansu alike. A small linger batches the bursts the simulator,
# the DLQ and replay produce without adding noticeable latency.
PRODUCER_DEFAULTS: dict[str, str] = {
    "acks": "all",
    "enable.idempotence": "true",
    "linger.ms": "5",
    "compression.type": "lz4",
    "client.id": "metrica-bridge",
}


def layered(*layers: Mapping[str, object]) -> dict[str, str]:
    """Merge property layers, later ones winning, values as strings (librdkafka takes both)."""
    merged: dict[str, str] = {}
    for layer in layers:
        for name, value in layer.items():
            merged[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return merged


def producer_config(settings: Settings, **overrides: object) -> dict[str, str]:
    """Properties for a producer; keyword names use underscores for dots (``linger_ms=0``)."""
    return layered(
        PRODUCER_DEFAULTS,
        settings.kafka_common(),
        {name.replace("_", "."): value for name, value in overrides.items()},
    )


def admin_config(settings: Settings) -> dict[str, str]:
    return dict(settings.kafka_common())
