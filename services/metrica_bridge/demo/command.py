"""``metrica-bridge demo``: everything embedded, with live progress (DESIGN.md §8, ``make run``).

Order of things: broker → sandbox → store → topics → status map pushed → consumers (the same
:class:`~metrica_bridge.service.Service` ``run`` uses, in this process) → simulator (in a
thread) → progress until every produced event has its outcome → summary → wait for Ctrl-C.
Stopping goes the other way: simulator, service (drains and commits), sandbox, broker (killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from metrica_bridge import logs
from metrica_bridge.codec import Codec
from metrica_bridge.config import Settings
from metrica_bridge.demo.progress import Produced, Snapshot, take_snapshot
from metrica_bridge.demo.stack import EmbeddedStack, StoreKind, Tuning
from metrica_bridge.demo.view import accounted_line, live_view, plain_line, summary
from metrica_bridge.kafka.producer import Producer
from metrica_bridge.kafka.settings import producer_config
from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.metrica.schema_sync import SyncReport, sync_order_statuses
from metrica_bridge.metrica.status_map import load_status_map
from metrica_bridge.service import Service
from metrica_bridge.simulate import SimulationConfig, Stats, generate, produce

EXIT_FAILED = 1
# How long "every event handled" must hold before we believe it: longer than the lag
# statistics interval, so a lag figure from before the last records cannot fool us.
SETTLE_S = 1.2


@dataclass(frozen=True)
class DemoOptions:
    events: int = 20_000
    rate: float = 500.0
    seed: int | None = None
    store: StoreKind = "sqlite"
    exit_when_done: bool = False
    duplicates: float = 0.02
    late: float = 0.02
    poison: float = 0.01
    keep_files: bool = False
    log_level: str = "INFO"
    quota_day_s: int = Tuning.quota_day_s
    refresh_per_second: float = 4.0
    plain_interval_s: float = 2.0


class Demo:
    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.seed = (
            options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
        )
        self.title = (
            f"metrica-bridge demo · seed {self.seed} · {options.events:,} events"
            f" at {f'{options.rate:,.0f}/s' if options.rate else 'full speed'}"
            f" · quota day {options.quota_day_s:,} s"
        )
        self.stack = EmbeddedStack(
            store=options.store,
            keep_files=options.keep_files,
            tuning=Tuning(quota_day_s=options.quota_day_s),
        )
        self.stop = asyncio.Event()
        self.force = asyncio.Event()
        self.produced = Produced(options.events)
        self._signals = 0
        self._log_file: TextIO | None = None
        self._service: Service | None = None
        self._service_stop = asyncio.Event()
        self._service_task: asyncio.Task[None] | None = None
        self._sim_task: asyncio.Future[Stats] | None = None
        self._started_at = time.monotonic()

    # -- signals -----------------------------------------------------------------------------
    def _on_signal(self) -> None:
        self._signals += 1
        self.stop.set()
        if self._signals > 1:
            self.force.set()  # a second Ctrl-C: stop waiting for the drain

    # -- the whole run -----------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            try:
                settings = await self._start()
            except Exception as exc:
                self.console.print(f"[red]demo failed to start:[/red] {type(exc).__name__}: {exc}")
                return EXIT_FAILED
            if settings is None:  # Ctrl-C while starting
                return 0
            return await self._monitor()
        finally:
            await self._shutdown()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def _start(self) -> Settings | None:
        o, stack = self.options, self.stack
        self.console.print(f"[bold]{self.title}[/bold] · store {o.store}")
        for step in (stack.start_broker, stack.start_sandbox, stack.start_store):
            await asyncio.to_thread(step)
            if self.stop.is_set():
                return None
        settings = stack.settings(o.log_level)
        # The service logs to a file: its lines would tear the live view apart.
        self._log_file = stack.log_path.open("a", encoding="utf-8")
        logs.configure(o.log_level, "json", self._log_file)
        await asyncio.to_thread(stack.create_topics, settings)
        report = await _push_status_map(settings)
        self._print_endpoints(report)
        self._service = Service(settings)
        self._service_task = asyncio.create_task(
            self._service.run(self._service_stop, health_port=stack.metrics_port), name="service"
        )
        started = asyncio.create_task(self._service.started.wait())
        stopping = asyncio.create_task(self.stop.wait())
        await asyncio.wait(
            {self._service_task, started, stopping}, return_when=asyncio.FIRST_COMPLETED
        )
        started.cancel()
        stopping.cancel()
        if self._service_task.done():
            self._service_task.result()  # raises what stopped it
            raise RuntimeError("the service stopped during start-up")
        if self.stop.is_set():
            return None
        self._sim_task = asyncio.ensure_future(
            asyncio.to_thread(
                _simulate, settings, self._simulation(settings), self.produced, o.rate
            )
        )
        return settings

    def _simulation(self, settings: Settings) -> SimulationConfig:
        o = self.options
        return SimulationConfig(
            count=o.events,
            seed=self.seed,
            duplicates=o.duplicates,
            late=o.late,
            poison=o.poison,
            topics=settings.topics(),
        )

    def _print_endpoints(self, report: SyncReport) -> None:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for name, where in self.stack.endpoints():
            table.add_row(name, where)
        self.console.print(table)
        statuses = len(report.final)
        action = "pushed" if report.posted else "already in place"
        self.console.print(f"status map: {statuses} order statuses {action} · Ctrl-C stops")

    # -- progress ----------------------------------------------------------------------------
    async def _monitor(self) -> int:
        o = self.options
        history: deque[Snapshot] = deque(maxlen=120)
        settled_since: float | None = None
        done = False
        last_plain = 0.0
        live = (
            Live(console=self.console, refresh_per_second=o.refresh_per_second, transient=False)
            if self.console.is_terminal
            else None
        )
        code = 0
        with live if live is not None else contextlib.nullcontext():
            while True:
                failure = self._failure()
                if failure:
                    self.console.print(f"[red]{failure}[/red]")
                    code = EXIT_FAILED
                    break
                snapshot = take_snapshot(self.produced, self._sandbox_counts())
                history.append(snapshot)
                elapsed = time.monotonic() - self._started_at
                if not done and snapshot.handled():
                    settled_since = settled_since or snapshot.at
                    if snapshot.at - settled_since >= SETTLE_S:
                        done = True
                        await self._print_summary(snapshot, elapsed)
                elif not done:
                    settled_since = None
                if live is not None:
                    view = live_view(
                        history,
                        self.title,
                        elapsed,
                        done=done,
                        stopping=False,
                        width=self.console.width,
                    )
                    live.update(view, refresh=True)
                elif snapshot.at - last_plain >= o.plain_interval_s or done:
                    last_plain = snapshot.at
                    print(plain_line(history, elapsed), flush=True)
                if (done and o.exit_when_done) or self.stop.is_set():
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=1 / o.refresh_per_second)
            if live is not None and history:
                elapsed = time.monotonic() - self._started_at
                view = live_view(
                    history, self.title, elapsed, done=done, stopping=True, width=self.console.width
                )
                live.update(view)
        return code

    def _failure(self) -> str | None:
        task = self._service_task
        if task is not None and task.done():
            error = task.exception() if not task.cancelled() else None
            return (
                f"the service stopped: {type(error).__name__}: {error}"
                if error
                else ("the service stopped")
            )
        sim = self._sim_task
        if sim is not None and sim.done() and not sim.cancelled() and sim.exception():
            error = sim.exception()
            return f"the simulator failed: {type(error).__name__}: {error}"
        return None

    def _sandbox_counts(self) -> tuple[int, int, int]:
        # Reads the sandbox's dicts from another thread: len() is atomic, so this is safe
        # without copying thousands of orders over HTTP several times a second.
        counter = self.stack.sandbox.sandbox.store.counter(self.stack.counter_id)
        return len(counter.orders), len(counter.contacts), len(counter.uploads)

    async def _print_summary(self, snapshot: Snapshot, elapsed: float) -> None:
        orders = await asyncio.to_thread(self.stack.sandbox.orders, self.stack.counter_id)
        statuses = Counter(str(order.get("order_status")) for order in orders)
        self.console.print(summary(snapshot, self.title, elapsed, statuses))
        self.console.print(accounted_line(snapshot), highlight=False)
        if not self.options.exit_when_done:
            self.console.print("everything handled; still running — Ctrl-C stops")

    # -- stopping ----------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        began = time.monotonic()
        if self._service_task is not None or self._sim_task is not None:
            self.console.print("stopping: simulator, consumers (drain and commit), sandbox, broker")
        self.produced.stop()
        if self._sim_task is not None:
            await asyncio.wait({self._sim_task}, timeout=15)
        self._service_stop.set()
        if self._service_task is not None:
            forced = asyncio.create_task(self.force.wait())
            timeout = self.stack.tuning.shutdown_timeout_s + 3
            await asyncio.wait(
                {self._service_task, forced}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            forced.cancel()
            if not self._service_task.done():
                self._service_task.cancel()
                await asyncio.wait({self._service_task}, timeout=5)
                self.console.print("[yellow]the service did not drain in time; stopped it[/yellow]")
        await asyncio.to_thread(self.stack.close)
        if self._service_task is not None:
            self.console.print(f"stopped in {time.monotonic() - began:.1f} s")

    def close_logs(self) -> None:
        """After the event loop is gone: tasks the service abandoned may log until then."""
        if self._log_file is not None:
            logs.configure(self.options.log_level, "json")
            self._log_file.close()
            self._log_file = None


async def _push_status_map(settings: Settings) -> SyncReport:
    status_map = load_status_map(settings.status_map_file)
    async with MetricaClient.from_settings(settings) as client:
        return await sync_order_statuses(client, status_map)


def _simulate(
    settings: Settings, config: SimulationConfig, produced: Produced, rate: float
) -> Stats:
    with (
        Codec.from_dir(settings.schemas_dir, settings.schema_registry_url) as codec,
        Producer(producer_config(settings), with_defaults=False) as producer,
    ):
        stats = produce(produced.through(generate(config, codec)), producer, rate)
    produced.acknowledged = stats.messages
    produced.finished = True
    return stats


def demo(
    events: Annotated[
        int, typer.Option("--events", min=0, help="CRM events the simulator produces.")
    ] = 20_000,
    rate: Annotated[
        float, typer.Option("--rate", min=0.0, help="Events per second; 0 = as fast as possible.")
    ] = 500.0,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Simulator seed (default: random, printed).")
    ] = None,
    store: Annotated[
        str,
        typer.Option("--store", help="State store: sqlite (a temp file) or postgres (pgserver)."),
    ] = "sqlite",
    exit_when_done: Annotated[
        bool,
        typer.Option("--exit-when-done", help="Exit once every event is handled (for CI)."),
    ] = False,
    duplicates: Annotated[
        float, typer.Option("--duplicates", min=0.0, max=1.0, help="Share re-sent as is.")
    ] = 0.02,
    late: Annotated[
        float, typer.Option("--late", min=0.0, max=1.0, help="Share of late (stale) statuses.")
    ] = 0.02,
    poison: Annotated[
        float, typer.Option("--poison", min=0.0, max=1.0, help="Share of undecodable/invalid.")
    ] = 0.01,
    keep_files: Annotated[
        bool, typer.Option("--keep-files", help="Keep the temp dir (store, logs) on exit.")
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="Service log level.")] = "INFO",
    quota_day_s: Annotated[
        int,
        typer.Option(
            "--quota-day-s",
            min=60,
            help="Length of a Metrica quota day (5,000 requests) for the service and the sandbox.",
        ),
    ] = Tuning.quota_day_s,
) -> None:
    """Run everything embedded: broker, Metrica sandbox, consumers, CRM simulator, live progress."""
    if store not in ("sqlite", "postgres"):
        raise typer.BadParameter("use sqlite or postgres", param_hint="--store")
    options = DemoOptions(
        events=events,
        rate=rate,
        seed=seed,
        store="postgres" if store == "postgres" else "sqlite",
        exit_when_done=exit_when_done,
        duplicates=duplicates,
        late=late,
        poison=poison,
        keep_files=keep_files,
        log_level=log_level,
        quota_day_s=quota_day_s,
    )
    console = Console(highlight=False)
    runner = Demo(options, console)
    try:
        code = _run_to_end(runner.run())
    finally:
        runner.close_logs()
    sys.stdout.flush()
    raise typer.Exit(code)


def _run_to_end(main: Coroutine[Any, Any, int], leftover_wait_s: float = 3.0) -> int:
    """``asyncio.run`` without its unbounded wait for leftover tasks.

    When the service's drain times out it abandons event tasks, and some of those can wait
    forever once the store is closed; ``asyncio.run`` would then hang after "stopped". Here
    leftovers get a bounded grace period and are then dropped with the loop.
    """
    loop = asyncio.new_event_loop()
    try:
        code = loop.run_until_complete(main)
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.wait(leftovers, timeout=leftover_wait_s))
        loop.run_until_complete(loop.shutdown_asyncgens())
        return code
    finally:
        # Tasks still pending here are abandoned on purpose: don't report them at exit.
        loop.set_exception_handler(lambda _loop, _context: None)
        loop.close()
