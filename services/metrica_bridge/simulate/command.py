"""``metrica-bridge simulate``: produce a seeded CRM event stream to the three topics."""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from metrica_bridge.codec import Codec, WireFormat
from metrica_bridge.config import ConfigError, load_settings
from metrica_bridge.kafka.admin import TopicError, ensure_topics
from metrica_bridge.kafka.producer import Producer, ProducerError
from metrica_bridge.kafka.settings import producer_config
from metrica_bridge.simulate.model import SimulatedMessage, SimulationConfig, generate
from metrica_bridge.simulate.runner import Stats, produce, with_manifest


def simulate(
    count: Annotated[int, typer.Option("--count", min=0, help="Messages in total.")] = 10_000,
    rate: Annotated[
        float, typer.Option("--rate", min=0.0, help="Messages per second; 0 = as fast as possible.")
    ] = 0.0,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed (default: random, printed).")
    ] = None,
    clients: Annotated[int, typer.Option("--clients", min=1, help="Returning clients.")] = 1_000,
    duplicates: Annotated[
        float, typer.Option("--duplicates", min=0.0, max=1.0, help="Share re-sent as is.")
    ] = 0.0,
    late: Annotated[
        float,
        typer.Option("--late", min=0.0, max=1.0, help="Share of statuses sent after a newer one."),
    ] = 0.0,
    poison: Annotated[
        float, typer.Option("--poison", min=0.0, max=1.0, help="Share of undecodable/invalid.")
    ] = 0.0,
    old: Annotated[
        float, typer.Option("--old", min=0.0, max=1.0, help="Share of deals created 30 days ago.")
    ] = 0.0,
    wire: Annotated[WireFormat, typer.Option("--wire", help="Wire encoding.")] = (
        WireFormat.SINGLE_OBJECT
    ),
    partitions: Annotated[
        int, typer.Option("--partitions", min=1, help="Partitions of topics it creates.")
    ] = 3,
    bootstrap: Annotated[
        str | None, typer.Option("--bootstrap", help="Default: KAFKA_BOOTSTRAP_SERVERS.")
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="Write one JSON line per message (fate and facts)."),
    ] = None,
    create_topics: Annotated[
        bool, typer.Option("--create-topics/--no-create-topics", help="Create missing topics.")
    ] = True,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML configuration file.")
    ] = None,
) -> None:
    """Produce a seeded, realistic CRM event stream (leads, deal statuses, payments)."""
    err = Console(stderr=True)
    try:
        settings = (
            load_settings(config, kafka_bootstrap_servers=bootstrap)
            if bootstrap
            else load_settings(config)
        )
        codec = Codec.from_dir(settings.schemas_dir, settings.schema_registry_url)
    except (ConfigError, ValueError) as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    if wire is WireFormat.CONFLUENT and not settings.schema_registry_url:
        err.print("[red]--wire confluent needs SCHEMA_REGISTRY_URL[/red]")
        raise typer.Exit(2)
    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    sim = SimulationConfig(
        count=count,
        seed=seed,
        clients=clients,
        duplicates=duplicates,
        late=late,
        poison=poison,
        old=old,
        wire=wire,
        topics=settings.topics(),
    )
    topics = list(settings.topics().values())
    try:
        if create_topics:
            ensure_topics(settings.kafka_common(), {name: partitions for name in topics})
        with (
            Producer(producer_config(settings), with_defaults=False, futures=False) as producer,
            _manifest(manifest) as out,
        ):
            messages = generate(sim, codec)
            if out is not None:
                messages = with_manifest(messages, out)
            stats = _produce(messages, producer, rate, count)
    except (TopicError, ProducerError) as exc:
        err.print(f"[red]simulate failed:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        codec.close()
    _summary(Console(), seed, settings.kafka_bootstrap_servers, stats)


@contextlib.contextmanager
def _manifest(path: Path | None) -> Iterator[IO[str] | None]:
    if path is None:
        yield None
        return
    with path.open("w", encoding="utf-8") as out:
        yield out


def _produce(
    messages: Iterator[SimulatedMessage], producer: Producer, rate: float, total: int
) -> Stats:
    if not sys.stdout.isatty():
        return produce(messages, producer, rate)
    with Progress(
        TextColumn("[bold]simulate[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        transient=False,
    ) as progress:
        task = progress.add_task("produce", total=total, rate="")

        def advance(done: int) -> None:
            elapsed = progress.tasks[task].elapsed or 0.0
            shown = f"{done / elapsed:,.0f} msg/s" if elapsed > 0 else ""
            progress.update(task, completed=done, rate=shown)

        return produce(messages, producer, rate, on_progress=advance)


def _summary(console: Console, seed: int, bootstrap: str, stats: Stats) -> None:
    table = Table(title=f"simulate: seed {seed} → {bootstrap}", show_edge=False)
    table.add_column("")
    table.add_column("messages", justify="right")
    for topic, n in sorted(stats.by_topic.items()):
        table.add_row(topic, f"{n:,}")
    for fate, n in sorted(stats.by_fate.items()):
        table.add_row(f"fate: {fate}", f"{n:,}")
    table.add_row("total", f"{stats.messages:,} in {stats.elapsed_s:.1f} s ({stats.rate:,.0f}/s)")
    console.print(table)
