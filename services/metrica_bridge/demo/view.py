"""How the demo shows progress: a rich live view on a terminal, plain lines otherwise, and the
final summary (the same text in both cases, so CI logs and tests can read it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from metrica_bridge.demo.progress import Snapshot, rate
from metrica_bridge.outcomes import ErrorClass, Outcome

FATE_LABELS = {  # the simulator's fates other than "ok", in display order
    "duplicate": "duplicates",
    "late": "late statuses",
    "decode_error": "poison: undecodable",
    "invalid_event": "poison: invalid",
}
LABEL_WIDTH = 18
VALUE_WIDTH = 14
WIDE = 116  # columns needed for the three sections side by side


def _n(value: float) -> str:
    return f"{int(value):,}"


def _parts(values: Mapping[str, int], names: Sequence[str] = ()) -> str:
    keys = list(names) + sorted(k for k in values if k not in names)
    shown = [f"{k} {_n(values.get(k, 0))}" for k in keys if values.get(k, 0) or k in names]
    return " · ".join(shown) if shown else "0"


def _dlq_total(s: Snapshot) -> int:
    return sum(s.dlq.values())


def _status(s: Snapshot, done: bool, stopping: bool) -> Text:
    if stopping:
        return Text("stopping…", style="bold yellow")
    if done:
        return Text("done: every event handled · Ctrl-C to stop", style="bold green")
    if s.setup_error:
        return Text("Metrica refuses the token, counter or data: sending stopped", style="bold red")
    if s.waiting_for_quota:
        return Text("daily quota spent: waiting for the next quota day", style="bold yellow")
    if not s.assigned:
        return Text("consumers joining…", style="yellow")
    return Text("running", style="bold cyan")


def _rows(table: Table, rows: Sequence[tuple[str, str]]) -> Table:
    for label, value in rows:
        table.add_row(label, value)
    return table


def _section(title: str) -> Table:
    table = Table.grid(padding=(0, 1))
    table.title = title
    table.title_style = "bold"
    table.add_column(style="dim", no_wrap=True, min_width=LABEL_WIDTH)
    table.add_column(justify="right", no_wrap=True, min_width=VALUE_WIDTH)
    return table


def live_view(
    history: Sequence[Snapshot],
    title: str,
    elapsed_s: float,
    *,
    done: bool,
    stopping: bool,
    width: int = 200,
) -> RenderableType:
    s = history[-1]
    produced = _section("CRM simulator → Kafka")
    _rows(
        produced,
        [
            ("produced", f"{_n(s.produced)} / {_n(s.produce_target)}"),
            ("rate", f"{rate(history, 'produced'):,.0f}/s"),
            *((label, _n(s.fates.get(fate, 0))) for fate, label in FATE_LABELS.items()),
        ],
    )
    consumers = _section("Consumers → outcomes")
    _rows(
        consumers,
        [
            ("consumed", f"{_n(s.consumed)}  {rate(history, 'consumed'):,.0f}/s"),
            ("in flight", _n(s.in_flight)),
            ("consumer lag", _n(s.lag)),
            (
                "delivered",
                f"{_n(s.outcome(Outcome.DELIVERED))}  {rate(history, 'delivered'):,.0f}/s",
            ),
            ("duplicates", _n(s.outcome(Outcome.DUPLICATE))),
            ("stale", _n(s.outcome(Outcome.STALE))),
            ("skipped", _n(s.outcome(Outcome.SKIPPED))),
            ("parked (waiting)", f"{_n(s.parked_now)}  released {_n(s.released)}"),
            ("dead-lettered", _n(_dlq_total(s))),
            *((f"  {cls}", _n(s.dlq[cls])) for cls in _dlq_classes(s) if s.dlq.get(cls)),
        ],
    )
    metrica = _section("Metrica (sandbox)")
    _rows(
        metrica,
        [
            ("uploads", _parts(s.uploads, ("contacts", "orders"))),
            ("records/upload", f"{s.records_per_upload:,.1f}"),
            ("requests", _parts(s.requests, ("success",))),
            ("orders held", _n(s.metrica_orders)),
            ("contacts held", _n(s.metrica_contacts)),
            ("daily quota left", "-" if s.quota_remaining is None else _n(s.quota_remaining)),
            ("pace", "-" if s.pace is None else f"{s.pace * 60:,.1f} requests/min"),
            ("by the reset", _projection(s)),
        ],
    )
    sections = (produced, consumers, metrica)
    grid = Table.grid(padding=(0, 4))
    if width >= WIDE:
        for _ in sections:
            grid.add_column(vertical="top")
        grid.add_row(*sections)
    else:  # a narrow terminal: one section under the other
        grid.add_column()
        for section in sections:
            grid.add_row(section)
    header = Text.assemble((title, "bold"), f"  ·  {elapsed_s:,.0f} s  ·  ")
    header.append_text(_status(s, done, stopping))
    bars = Table.grid(padding=(0, 1))
    bars.add_column(style="dim", min_width=LABEL_WIDTH)
    bars.add_column()
    bars.add_column(justify="right", min_width=5)
    for label, value in (("produced", s.produced), ("handled", s.accounted)):
        share = min(1.0, value / s.produce_target) if s.produce_target else 1.0
        bars.add_row(label, ProgressBar(total=1.0, completed=share, width=50), f"{share:.0%}")
    return Panel(
        Group(header, bars, Text(""), grid),
        border_style="green" if done else "cyan",
    )


def _projection(s: Snapshot) -> str:
    """Requests the quota day will have used by its reset at the recent rate, of the budget."""
    if s.projected is None or s.daily_budget is None:
        return "-"
    return f"{_n(s.projected)} of {_n(s.daily_budget)} projected"


def _dlq_classes(s: Snapshot) -> list[str]:
    known = [c.value for c in ErrorClass]
    return known + sorted(c for c in s.dlq if c not in known)


def plain_line(history: Sequence[Snapshot], elapsed_s: float) -> str:
    s = history[-1]
    return (
        f"[{elapsed_s:6.1f}s] produced {_n(s.produced)}/{_n(s.produce_target)}"
        f" ({rate(history, 'produced'):,.0f}/s)"
        f" | consumed {_n(s.consumed)} in flight {_n(s.in_flight)} lag {_n(s.lag)}"
        f" | delivered {_n(s.outcome(Outcome.DELIVERED))}"
        f" duplicate {_n(s.outcome(Outcome.DUPLICATE))}"
        f" stale {_n(s.outcome(Outcome.STALE))}"
        f" skipped {_n(s.outcome(Outcome.SKIPPED))}"
        f" parked {_n(s.parked_now)}"
        f" dlq {_n(_dlq_total(s))}"
        f" | uploads {_n(sum(s.uploads.values()))} ({s.records_per_upload:,.1f} rec/upload)"
        f" | metrica orders {_n(s.metrica_orders)} contacts {_n(s.metrica_contacts)}"
    )


def accounted_line(s: Snapshot) -> str:
    """One stable line the tests (and a CI log reader) can match."""
    return f"accounted for: {_n(s.accounted)} of {_n(s.produced)} produced events"


def summary(s: Snapshot, title: str, elapsed_s: float, statuses: Mapping[str, int]) -> Table:
    table = Table(title=f"{title}: summary after {elapsed_s:,.1f} s", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column()
    fates = {k: v for k, v in s.fates.items()}
    table.add_row("produced", _n(s.produced), "by fate: " + _parts(fates, ("ok",)))
    table.add_row("consumed", _n(s.consumed), "")
    table.add_row("delivered", _n(s.outcome(Outcome.DELIVERED)), "sent to Metrica once")
    table.add_row("duplicates", _n(s.outcome(Outcome.DUPLICATE)), "same event_id seen before")
    table.add_row("stale", _n(s.outcome(Outcome.STALE)), "older than what the order holds")
    table.add_row("skipped", _n(s.outcome(Outcome.SKIPPED)), "no-op or unmapped status")
    table.add_row(
        "parked", _n(s.parked_now), f"waiting for the client's identity ({_n(s.released)} released)"
    )
    table.add_row("dead-lettered", _n(_dlq_total(s)), _parts(s.dlq))
    others = {k: v for k, v in s.outcomes.items() if k not in {o.value for o in Outcome}}
    if others:
        table.add_row("other outcomes", _n(sum(others.values())), _parts(others))
    table.add_row("", "", "")
    table.add_row(
        "uploads",
        _n(sum(s.uploads.values())),
        f"{_parts(s.uploads, ('contacts', 'orders'))}; {s.records_per_upload:,.1f} records each",
    )
    table.add_row("Metrica requests", _n(sum(s.requests.values())), _parts(s.requests))
    table.add_row("Metrica orders", _n(s.metrica_orders), _parts(statuses) if statuses else "")
    table.add_row("Metrica contacts", _n(s.metrica_contacts), "")
    return table
