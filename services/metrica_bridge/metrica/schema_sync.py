"""``metrica-bridge schema-sync``: push the status map to ``/schema/order_statuses``, idempotently.

Validate → GET → compare → POST only when something differs → GET again → report. A second run
against an unchanged map posts nothing. Statuses that exist in Metrica but not in the map are
reported as "extra" and left alone (the API has no DELETE).
Exit codes: 0 in sync, 1 still different after the push, 2 invalid map or configuration,
3 Metrica refused or could not be reached.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from metrica_bridge import logs
from metrica_bridge.config import ConfigError, load_settings
from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.metrica.errors import MetricaError
from metrica_bridge.metrica.status_map import (
    MetricaStatus,
    StatusMap,
    StatusMapError,
    load_status_map,
)

EXIT_MISMATCH = 1
EXIT_INVALID = 2
EXIT_METRICA = 3


@dataclass(frozen=True)
class StatusDiff:
    id: str
    state: str  # "ok", "missing", "differs", "extra"
    desired: dict[str, Any] | None
    current: dict[str, Any] | None
    fields: tuple[str, ...] = ()

    @property
    def is_mismatch(self) -> bool:
        return self.state in ("missing", "differs")


@dataclass
class SyncReport:
    before: list[StatusDiff]
    after: list[StatusDiff] = field(default_factory=list)
    posted: bool = False
    dry_run: bool = False

    @property
    def final(self) -> list[StatusDiff]:
        return self.after if self.posted else self.before

    @property
    def in_sync(self) -> bool:
        return not any(d.is_mismatch for d in self.final)


def _goals(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):  # older docs' sample sends a bare string
        return frozenset(g for g in value.split(",") if g)
    return frozenset(str(g) for g in value)


def diff_statuses(desired: list[MetricaStatus], current: list[dict[str, Any]]) -> list[StatusDiff]:
    """Compare what the map wants with what Metrica holds, by status id."""
    by_id = {str(c.get("id")): c for c in current}
    diffs: list[StatusDiff] = []
    for status in desired:
        want = status.to_api()
        have = by_id.pop(status.id, None)
        if have is None:
            diffs.append(StatusDiff(status.id, "missing", want, None))
            continue
        fields = []
        if have.get("type") != status.type:
            fields.append("type")
        # Metrica may fill a name we did not set; compare it only when the map sets one.
        if status.humanized is not None and have.get("humanized") != status.humanized:
            fields.append("humanized")
        if _goals(have.get("goal_action_ids")) != frozenset(status.goals):
            fields.append("goal_action_ids")
        diffs.append(
            StatusDiff(status.id, "differs" if fields else "ok", want, have, tuple(fields))
        )
    diffs.extend(StatusDiff(sid, "extra", None, have) for sid, have in by_id.items())
    return diffs


# Metrica's own statuses (metrica-api.md §6): an order may carry them without any mapping.
PREDEFINED_STATUSES = frozenset({"IN_PROGRESS", "PAID", "CANCELLED", "SPAM"})
SCHEMA_SYNC_COMMAND = "metrica-bridge schema-sync"


def start_up_mismatches(diffs: list[StatusDiff]) -> list[StatusDiff]:
    """The differences that keep the service from starting (issue 15, item 8): every status
    of the map the counter lacks or holds otherwise. A predefined status the map uses as is
    (id = type, no goals) needs no mapping, so its absence does not count; statuses the counter
    has beyond the map ("extra") never do."""

    def predefined(diff: StatusDiff) -> bool:
        want = diff.desired or {}
        return (
            diff.state == "missing"
            and diff.id in PREDEFINED_STATUSES
            and want.get("type") == diff.id
            and not want.get("goal_action_ids")
        )

    return [d for d in diffs if d.is_mismatch and not predefined(d)]


def describe_mismatches(diffs: list[StatusDiff], limit: int = 8) -> str:
    """``missing: vip, gold; differs: won (type)``: what is wrong, by status id."""

    def ids(items: list[str]) -> str:
        more = f", … ({len(items) - limit} more)" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    missing = [d.id for d in diffs if d.state == "missing"]
    differs = [f"{d.id} ({', '.join(d.fields)})" for d in diffs if d.state == "differs"]
    parts = [f"missing: {ids(missing)}"] if missing else []
    parts += [f"differs: {ids(differs)}"] if differs else []
    return "; ".join(parts)


def status_map_problem(diffs: list[StatusDiff], *, pushed: bool = False) -> str | None:
    """The reason the service is not ready, naming the command that fixes it; None: agrees."""
    blocking = start_up_mismatches(diffs)
    if not blocking:
        return None
    if pushed:
        return (
            "status map pushed at start-up, but the counter's order statuses still differ "
            f"({describe_mismatches(blocking)}): compare with `{SCHEMA_SYNC_COMMAND} --dry-run`"
        )
    return (
        f"status map differs from the counter's order statuses ({describe_mismatches(blocking)})"
        f": run `{SCHEMA_SYNC_COMMAND}` (or set METRICA_SCHEMA_SYNC_ON_START=true)"
    )


async def compare_order_statuses(client: MetricaClient, status_map: StatusMap) -> list[StatusDiff]:
    """GET ``/schema/order_statuses`` and compare it with the map; sends nothing."""
    return diff_statuses(status_map.metrica_statuses(), await client.get_order_statuses())


async def sync_order_statuses(
    client: MetricaClient, status_map: StatusMap, *, dry_run: bool = False
) -> SyncReport:
    desired = status_map.metrica_statuses()
    report = SyncReport(before=diff_statuses(desired, await client.get_order_statuses()))
    report.dry_run = dry_run
    if dry_run or report.in_sync:
        return report
    # The whole desired list, not just the differences: right whether POST merges or replaces.
    await client.put_order_statuses(status_map.to_order_statuses())
    report.posted = True
    report.after = diff_statuses(desired, await client.get_order_statuses())
    return report


def render_report(report: SyncReport, status_map: StatusMap, console: Console) -> None:
    table = Table(title=f"Order statuses ({status_map.source})")
    for column in ("Status id", "Type", "Humanized", "Goals", "Before", "After"):
        table.add_column(column)
    after = {d.id: d for d in report.after}
    for diff in report.before:
        source = diff.desired or diff.current or {}
        goals = ", ".join(sorted(_goals(source.get("goal_action_ids"))))
        table.add_row(
            diff.id,
            str(source.get("type", "")),
            str(source.get("humanized") or ""),
            goals,
            _state(diff),
            _state(after[diff.id]) if diff.id in after else "-",
        )
    console.print(table)
    if report.dry_run:
        console.print("dry run: nothing was sent")
    elif not report.posted:
        console.print("already in sync: nothing was sent")
    elif report.in_sync:
        console.print("pushed; read-back matches the map")
    else:
        console.print("[red]pushed, but the read-back still differs from the map[/red]")


def _state(diff: StatusDiff) -> str:
    if diff.state == "differs":
        return f"differs ({', '.join(diff.fields)})"
    if diff.state == "extra":
        return "extra (not in map)"
    return diff.state


def schema_sync(
    status_map_file: Annotated[
        Path | None,
        typer.Option("--status-map", help="Status map YAML (default: STATUS_MAP_FILE)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and compare; send nothing.")
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML configuration file.")
    ] = None,
) -> None:
    """Push the status map to Metrica's /schema/order_statuses and verify it by reading back."""
    console = Console()
    try:
        settings = load_settings(config)
        logs.configure(settings.log_level, settings.log_format)
        status_map = load_status_map(status_map_file or settings.status_map_file)
        client = MetricaClient.from_settings(settings)
    except (ConfigError, StatusMapError, ValueError) as exc:
        console.print(f"[red]invalid:[/red] {exc}")
        raise typer.Exit(EXIT_INVALID) from None

    async def run() -> SyncReport:
        async with client:
            return await sync_order_statuses(client, status_map, dry_run=dry_run)

    try:
        report = asyncio.run(run())
    except MetricaError as exc:
        console.print(f"[red]Metrica:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(EXIT_METRICA) from None
    render_report(report, status_map, console)
    if report.posted and not report.in_sync:
        raise typer.Exit(EXIT_MISMATCH)
