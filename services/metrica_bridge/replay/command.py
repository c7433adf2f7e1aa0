"""``metrica-bridge replay``: the command line over :func:`metrica_bridge.replay.replay`.

Exit codes: 0 done (refused records are reported, not an error), 1 the run failed (broker
unreachable, delivery or commit failed, another replay holds the DLQ), 2 bad options or
configuration or an unknown topic, 130 interrupted (what was done is committed).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from metrica_bridge.config import ConfigError, load_settings
from metrica_bridge.logs import configure
from metrica_bridge.outcomes import ErrorClass
from metrica_bridge.replay.options import DEFAULT_MAX_REPLAYS, ReplayOptions, parse_when
from metrica_bridge.replay.run import ProgressFn, ReplayError, replay
from metrica_bridge.replay.summary import ReplaySummary

PLAIN_EVERY_S = 2.0
SHOWN_REFUSALS = 20


def replay_command(
    dlq: Annotated[
        str, typer.Option("--dlq", help="The dead-letter topic, e.g. lead-created.dlq.")
    ],
    error_class: Annotated[
        list[ErrorClass] | None,
        typer.Option("--error-class", help="Replay only this class (repeatable). Default: all."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only records that failed at or after this ISO date/time."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until", help="Only records that failed before this ISO date/time (a date: its end)."
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Stop after replaying this many.")
    ] = None,
    rate: Annotated[
        float, typer.Option("--rate", min=0.0, help="Records per second; 0 = unlimited.")
    ] = 0.0,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show what would be replayed; produce and commit nothing."),
    ] = False,
    max_replays: Annotated[
        int,
        typer.Option(
            "--max-replays", min=1, help="Refuse records already replayed this many times."
        ),
    ] = DEFAULT_MAX_REPLAYS,
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning",
            help="Read the DLQ from its first record, not from where the last run stopped.",
        ),
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file; the environment wins over it.")
    ] = None,
) -> None:
    """Re-publish dead-lettered records to their original topic, resuming where the last run
    stopped; ends with a summary by error class."""
    err = Console(stderr=True)
    try:
        settings = load_settings(config)
        options = ReplayOptions(
            dlq_topic=dlq,
            error_classes=frozenset(c.value for c in error_class or []),
            since=parse_when(since) if since else None,
            until=parse_when(until, end_of_day=True) if until else None,
            limit=limit,
            rate=rate,
            dry_run=dry_run,
            max_replays=max_replays,
            from_beginning=from_beginning,
        )
    except (ConfigError, ValueError) as exc:
        err.print(f"[red]replay: {exc}[/red]")
        raise typer.Exit(2) from None
    configure(settings.log_level, settings.log_format)
    stop = threading.Event()
    with _stop_on_sigint(stop), _progress(err, options) as on_progress:
        try:
            summary = replay(settings, options, on_progress=on_progress, stop=stop)
        except ReplayError as exc:
            if exc.summary is not None and exc.summary.read:
                print_summary(Console(), exc.summary)
            err.print(f"[red]replay failed:[/red] {exc}")
            raise typer.Exit(exc.exit_code) from None
    print_summary(Console(), summary)
    if summary.interrupted:
        raise typer.Exit(130)


@contextlib.contextmanager
def _stop_on_sigint(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C: finish the batch in hand, commit, summarise. Second: the usual abort."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _counts(summary: ReplaySummary) -> str:
    verb = "would replay" if summary.dry_run else "replayed"
    return (
        f"{verb} {summary.replayed:,} · skipped {summary.skipped:,} · refused {summary.refused:,}"
    )


@contextlib.contextmanager
def _progress(console: Console, options: ReplayOptions) -> Iterator[ProgressFn]:
    started = time.monotonic()
    if not console.is_terminal:
        last = [started]  # short runs print only the summary

        def plain(summary: ReplaySummary) -> None:
            now = time.monotonic()
            if now - last[0] >= PLAIN_EVERY_S:
                last[0] = now
                total = f"/{summary.total:,}" if summary.total is not None else ""
                rate = summary.replayed / max(now - started, 1e-9)
                print(
                    f"replay {options.dlq_topic}: read {summary.read:,}{total} · "
                    f"{_counts(summary)} · {rate:,.1f}/s",
                    file=sys.stderr,
                    flush=True,
                )

        yield plain
        return
    with Progress(
        TextColumn(f"[bold]replay[/bold] {options.dlq_topic}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("replay", total=None, counts="", rate="")

        def bar(summary: ReplaySummary) -> None:
            elapsed = time.monotonic() - started
            progress.update(
                task,
                completed=summary.read,
                total=summary.total,
                counts=_counts(summary),
                rate=f"{summary.replayed / elapsed:,.1f}/s" if elapsed > 0 else "",
            )

        yield bar


def print_summary(console: Console, summary: ReplaySummary) -> None:
    title = f"replay {summary.dlq_topic}" + (
        " — DRY RUN: nothing produced or committed" if summary.dry_run else ""
    )
    table = Table(title=title, show_edge=False)
    table.add_column("error class")
    table.add_column("would replay" if summary.dry_run else "replayed", justify="right")
    table.add_column("skipped (filter)", justify="right")
    table.add_column("refused (cap)", justify="right")
    for name, c in sorted(summary.by_class.items()):
        table.add_row(name, f"{c.replayed:,}", f"{c.skipped:,}", f"{c.refused:,}")
    table.add_row(
        "[bold]total[/bold]",
        f"[bold]{summary.replayed:,}[/bold]",
        f"{summary.skipped:,}",
        f"{summary.refused:,}",
    )
    console.print(table)
    notes = [
        f"read {summary.read:,} record(s) in {summary.elapsed_s:.1f} s, group {summary.group_id}"
    ]
    if summary.read == 0:
        notes.append("nothing new in the DLQ since the last run (see --from-beginning)")
    if summary.limit_reached:
        notes.append("stopped at --limit; the next run continues after the last replayed record")
    if summary.interrupted:
        notes.append("interrupted: the records handled so far are committed")
    for note in notes:
        console.print(note)
    if summary.refusals:
        console.print(
            f"[yellow]{len(summary.refusals)} record(s) refused: replayed "
            "--max-replays times already (see the runbook):[/yellow]"
        )
        for r in summary.refusals[:SHOWN_REFUSALS]:
            console.print(
                f"  {summary.dlq_topic}[{r.partition}]@{r.offset} key={r.key} "
                f"class={r.error_class} replays={r.replay_count} → {r.original_topic}"
            )
        if len(summary.refusals) > SHOWN_REFUSALS:
            console.print(f"  … and {len(summary.refusals) - SHOWN_REFUSALS} more")
