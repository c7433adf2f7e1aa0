"""``metrica-bridge check``: validate the configuration and the status map, and show how events
would be rendered for Metrica (a dry run: nothing is sent, nothing is written)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from rich.console import Console
from rich.table import Table

from metrica_bridge import normalize
from metrica_bridge.codec import Codec, DecodeError
from metrica_bridge.config import ConfigError, Settings, load_settings
from metrica_bridge.events import (
    DealStatusChanged,
    Event,
    InvalidEvent,
    LeadCreated,
    PaymentReceived,
    parse_event,
)
from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.metrica.errors import MetricaError
from metrica_bridge.metrica.retry import RetryPolicy
from metrica_bridge.metrica.schema_sync import (
    StatusDiff,
    compare_order_statuses,
    status_map_problem,
)
from metrica_bridge.metrica.status_map import StatusMap, StatusMapError, load_status_map
from metrica_bridge.steps import enrich, order_rules
from metrica_bridge.store import redact_url, sqlite_path
from metrica_bridge.store.base import Identity

DEFAULT_ZONE = "Europe/Moscow"


def _examples(now: datetime) -> list[Event]:
    created = now - timedelta(hours=2)
    return [
        LeadCreated(
            event_id="check-lead",
            occurred_at=created,
            lead_id="L-1",
            deal_id="D-1",
            client={
                "uniq_id": "C-1",
                "name": "Example",
                "phones": ["+7 (999) 555-11-11"],
                "emails": [" Mail@Yandex.RU "],
            },
            metrica_client_id="1712345678901234567",
        ),
        DealStatusChanged(
            event_id="check-status",
            occurred_at=now - timedelta(hours=1),
            deal_id="D-1",
            client_uniq_id="C-1",
            deal_created_at=created,
            status="won",
            revenue=Decimal("5000.00"),
        ),
        PaymentReceived(
            event_id="check-payment",
            occurred_at=now,
            payment_id="P-1",
            deal_id="D-1",
            client_uniq_id="C-1",
            amount=Decimal("5000.00"),
        ),
    ]


def render(
    event: Event, statuses: StatusMap, zone: ZoneInfo, hash_identifiers: bool
) -> dict[str, Any]:
    """What the service would upload for this event on a fresh order (no earlier state)."""
    now = datetime.now(UTC)
    out: dict[str, Any] = {"event_id": event.event_id, "type": type(event).__name__}
    if isinstance(event, LeadCreated):
        identity = Identity(
            event.client.uniq_id,
            event.client_ids,
            event.client.phones,
            event.client.emails,
            event.client.name,
            event.consent,
        )
        out["contact"] = enrich.contact_record(identity, hash_identifiers).render(zone)
        verdict: order_rules.Verdict | None = (
            order_rules.on_lead(None, event, statuses, now) if event.deal_id else None
        )
    elif isinstance(event, DealStatusChanged):
        verdict = order_rules.on_status(None, event, statuses, now)
    else:
        verdict = order_rules.on_payment(None, event, statuses, now)
    if isinstance(verdict, order_rules.Send):
        out["order"] = verdict.record.render(zone)
        if verdict.windows:
            out["outside_binding_window"] = list(verdict.windows)
    elif isinstance(verdict, order_rules.Skip):
        out["skipped"] = verdict.reason
    elif isinstance(verdict, (order_rules.Wait, order_rules.Invalid)):
        out["waits" if isinstance(verdict, order_rules.Wait) else "invalid"] = verdict.reason
    return out


def check(
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file; the environment wins.")
    ] = None,
    sample: Annotated[
        list[Path] | None,
        typer.Option("--sample", help="A Kafka message value (Avro bytes) to render; repeatable."),
    ] = None,
    show_identifiers: Annotated[
        bool,
        typer.Option(
            help="Print phones and emails in the rendered records (they are masked otherwise)."
        ),
    ] = False,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Do not ask Metrica for the counter's time zone and order statuses.",
        ),
    ] = False,
) -> None:
    """Validate configuration and the status map, compare them with the counter in Metrica
    (time zone, order statuses; reads only), and dry-run the rendering of records."""
    console = Console()
    table = Table("check", "result", "detail")
    failed = False

    def row(name: str, fn: Callable[[], str]) -> Any:
        nonlocal failed
        try:
            detail = fn()
        except (ConfigError, StatusMapError, ValueError, OSError, ZoneInfoNotFoundError) as exc:
            failed = True
            table.add_row(name, "[red]fail[/red]", str(exc))
            return None
        table.add_row(name, "[green]ok[/green]", detail)
        return detail

    settings: Settings | None = None

    def load() -> str:
        nonlocal settings
        settings = load_settings(config)
        normalize.set_default_region(settings.phone_default_region)
        return "environment" + (f" + {config}" if config else "")

    row("configuration", load)
    if settings is None:
        console.print(table)
        raise typer.Exit(2)
    s: Settings = settings
    row(
        "Kafka",
        lambda: (
            s.kafka_bootstrap_servers
            + (f" (+{len(s.kafka_properties)} properties)" if s.kafka_properties else "")
        ),
    )
    row(
        "Metrica counter and token",
        lambda: f"counter {s.require_metrica()[0]} at {s.metrica_api_url}, token set",
    )
    row(
        "store",
        lambda: (
            redact_url(s.store_url)
            if not s.store_url.startswith("sqlite") or sqlite_path(s.store_url)
            else ""
        ),
    )
    statuses = row("status map", lambda: _describe(load_status_map(s.status_map_file)))
    status_map = load_status_map(s.status_map_file) if statuses is not None else None
    counter = _ask_counter(s, status_map, offline)
    row("time zone", lambda: _zone_row(s, counter))
    if counter.zone_warning:
        table.add_row("", "[yellow]warn[/yellow]", counter.zone_warning)
    if counter.diffs is None and counter.statuses_error is None:
        skipped = counter.skipped or "not compared: the status map is invalid"
        table.add_row("order statuses", "[yellow]skipped[/yellow]", skipped)
    else:
        row("order statuses", lambda: _statuses_row(counter))
    zone = ZoneInfo(counter.render_zone)
    codec_detail = row("Avro schemas", lambda: _schemas(s))
    console.print(table)
    if status_map is None or codec_detail is None:
        raise typer.Exit(1)
    codec = Codec.from_dir(s.schemas_dir, s.schema_registry_url)
    events: list[Event] = []
    for path in sample or []:
        try:
            decoded = codec.decode(path.read_bytes())
            events.append(parse_event(decoded.schema_name, decoded.record))
        except (DecodeError, InvalidEvent) as exc:
            failed = True
            console.print(f"[red]{path}[/red]: {getattr(exc, 'reason', exc)}")
    for event in events or _examples(datetime.now(UTC)):
        rendered = render(event, status_map, zone, s.hash_identifiers)
        text = json.dumps(rendered, ensure_ascii=False, indent=2, default=str)
        console.print_json(text if show_identifiers else _mask(rendered))
    if failed:
        raise typer.Exit(1)


CHECK_RETRY = RetryPolicy(max_attempts=2, budget_s=10.0)  # an operator waits at a terminal
CHECK_TIMEOUT_S = 10.0


@dataclass
class CounterFacts:
    """What Metrica said about the counter (reads only), or why it could not be asked."""

    zone: str | None = None
    diffs: list[StatusDiff] | None = None
    zone_error: str | None = None
    statuses_error: str | None = None
    zone_warning: str | None = None
    skipped: str | None = None
    render_zone: str = DEFAULT_ZONE  # the zone the examples below are rendered in


def _ask_counter(settings: Settings, status_map: StatusMap | None, offline: bool) -> CounterFacts:
    """``GET /management/v1/counter/{id}`` and ``GET /schema/order_statuses`` (two requests,
    a short retry): what the service compares at start-up before it consumes anything."""
    if offline:
        return CounterFacts(skipped="not compared with the counter (--offline)")
    try:
        settings.require_metrica()
    except ConfigError:
        return CounterFacts(skipped="not compared with the counter (no counter or token)")
    facts = CounterFacts()
    where = f"Metrica at {settings.metrica_api_url} (--offline checks the files only)"

    async def ask() -> None:
        client = MetricaClient.from_settings(
            settings.model_copy(
                update={"metrica_timeout_s": min(settings.metrica_timeout_s, CHECK_TIMEOUT_S)}
            ),
            retry=CHECK_RETRY,
        )
        async with client:
            try:
                facts.zone = await client.counter_timezone()
            except MetricaError as exc:
                facts.zone_error = f"cannot read the counter's time zone: {exc}; {where}"
            if status_map is None:
                return
            try:
                facts.diffs = await compare_order_statuses(client, status_map)
            except MetricaError as exc:
                facts.statuses_error = f"cannot read the counter's order statuses: {exc}; {where}"

    asyncio.run(ask())
    return facts


def _zone_row(settings: Settings, counter: CounterFacts) -> str:
    """Which zone the service would send dates in, as it decides at start-up; a ConfigError
    where it would refuse to start (or the counter could not be asked)."""
    configured = settings.configured_timezone()
    if configured is not None:
        counter.render_zone = configured
    if counter.zone is None:
        if counter.zone_error is not None:
            raise ConfigError(counter.zone_error)
        if configured is not None:
            return f"{configured} (METRICA_TIMEZONE; {counter.skipped})"
        return f"{DEFAULT_ZONE} (assumed; the service reads the counter's zone: {counter.skipped})"
    counter.render_zone = counter.zone
    zone = settings.timezone_for(counter.zone)  # TimezoneMismatch: the service would refuse
    counter.render_zone = zone
    if zone != counter.zone:
        counter.zone_warning = (
            f"METRICA_TIMEZONE_OVERRIDE: dates go out in {zone}, the counter's zone is "
            f"{counter.zone}; Metrica reads them as {counter.zone} local time"
        )
        return f"{zone} (METRICA_TIMEZONE, overriding the counter's {counter.zone})"
    return f"{zone} (the counter's" + (", as METRICA_TIMEZONE)" if configured else ")")


def _statuses_row(counter: CounterFacts) -> str:
    if counter.statuses_error is not None:
        raise ConfigError(counter.statuses_error)
    diffs = counter.diffs or []
    problem = status_map_problem(diffs)
    if problem is not None:
        raise ConfigError(problem)
    extra = sum(1 for d in diffs if d.state == "extra")
    agree = f"the counter knows every status of the map ({len(diffs) - extra}"
    return agree + (f"; {extra} more in the counter, not in the map)" if extra else ")")


def _store(url: str) -> str:
    if url.startswith("sqlite:"):
        sqlite_path(url)  # raises ConfigError for a malformed URL
    elif not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"STORE_URL {redact_url(url)!r}: use sqlite:///path or postgresql://…")
    return redact_url(url)


def _describe(statuses: StatusMap) -> str:
    return (
        f"{len(statuses.statuses)} CRM statuses → {len(statuses.metrica_statuses())} Metrica statuses"
        f" ({statuses.source}); initial {statuses.initial.id}, paid {statuses.paid.id}"
    )


def _schemas(settings: Settings) -> str:
    codec = Codec.from_dir(settings.schemas_dir, settings.schema_registry_url)
    return ", ".join(
        f"{name.rsplit('.', 1)[1]} {'/'.join(codec.versions(name))}" for name in codec.schema_names
    )


def _mask(rendered: dict[str, Any]) -> str:
    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if key in ("phones", "emails") and isinstance(value, str):
            return value[:2] + "…"
        return value

    return json.dumps(walk(rendered), ensure_ascii=False, default=str)
