"""``metrica-bridge sandbox``: serve the Metrica emulator in the foreground (DESIGN.md §6)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
import uvicorn

from metrica_bridge import logs
from metrica_bridge.sandbox.app import create_app
from metrica_bridge.sandbox.core import Sandbox
from metrica_bridge.sandbox.quotas import DAY_S, REQUESTS_PER_DAY

DEFAULT_TOKEN = "sandbox-token"  # noqa: S105 - the emulator's own, documented default
DEFAULT_COUNTER_ID = 12345678


def sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = 8780,
    token: Annotated[
        list[str] | None,
        typer.Option(help=f"An OAuth token to accept; repeatable (default: {DEFAULT_TOKEN})."),
    ] = None,
    counter_id: Annotated[
        list[int] | None,
        typer.Option(help=f"A counter to serve; repeatable (default: {DEFAULT_COUNTER_ID})."),
    ] = None,
    timezone: Annotated[str, typer.Option(help="Counters' IANA time zone.")] = "Europe/Moscow",
    state: Annotated[
        Path | None, typer.Option(help="SQLite file keeping the data across restarts.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    requests_per_day: Annotated[
        int, typer.Option(help="Requests per quota day, per token and per counter.")
    ] = REQUESTS_PER_DAY,
    quota_day_s: Annotated[
        int,
        typer.Option(
            help="Length of a quota day in seconds; days are [k·N, (k+1)·N) of Unix time "
            "(86400: reset at 00:00 GMT)."
        ),
    ] = DAY_S,
    goal: Annotated[
        list[str] | None,
        typer.Option(
            help="A JavaScript-event goal id every counter has (orders' goals must name one); "
            "repeatable."
        ),
    ] = None,
    product: Annotated[
        list[str] | None,
        typer.Option(
            help="A product of every counter's product list; repeatable. Without any, order "
            "products are checked only once POST /schema/products made a list."
        ),
    ] = None,
) -> None:
    """Run the local Metrica CDP emulator (inspection and faults under /_sandbox)."""
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise typer.BadParameter(
            f"unknown time zone {timezone!r}", param_hint="--timezone"
        ) from None
    if requests_per_day < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--requests-per-day")
    if quota_day_s < 1:
        raise typer.BadParameter("must be at least 1 (second)", param_hint="--quota-day-s")
    tokens = token or [DEFAULT_TOKEN]
    counters = counter_id or [DEFAULT_COUNTER_ID]
    for value in tokens:
        logs.register_secret(value)
    logs.configure(log_level, "console")
    core = Sandbox(
        tokens,
        counters,
        timezone,
        state,
        requests_per_day=requests_per_day,
        quota_day_s=quota_day_s,
        products=product,
        goals=goal or (),
    )
    log = logs.get_logger("metrica_bridge.sandbox")
    log.info(
        "sandbox starting",
        url=f"http://{host}:{port}",
        counters=counters,
        tokens=len(tokens),
        timezone=timezone,
        state=str(state) if state else "memory",
        requests_per_day=requests_per_day,
        quota_day_s=quota_day_s,
    )
    try:
        uvicorn.run(
            create_app(core, log_requests=True),
            host=host,
            port=port,
            log_level=log_level.lower(),
            access_log=False,  # our own request log: the path without the query string
            lifespan="off",
        )
    finally:
        core.close()
