"""``metrica-bridge run`` and ``metrica-bridge check``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from metrica_bridge.config import ConfigError, load_settings
from metrica_bridge.events import EventKind
from metrica_bridge.logs import configure, redact

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="YAML file; the environment wins over it.")
]


def run(
    topic: Annotated[
        list[str] | None,
        typer.Option(
            "--topic", help="Run only this topic's consumer (repeatable). Default: all three."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run the consumers: one independent consumer group per topic."""
    from metrica_bridge.service import run_service

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise SystemExit(redact(f"configuration error: {exc}")) from None
    configure(settings.log_level, settings.log_format)
    kinds: list[EventKind] = []
    for name in topic or []:
        try:
            kinds.append(settings.kind_of_topic(name))
        except ConfigError as exc:
            raise typer.BadParameter(str(exc), param_hint="--topic") from None
    run_service(settings, kinds or None)
