"""The ``metrica-bridge`` command line (DESIGN.md §6).

Each command lives beside the code it drives; this module only wires them together.
"""

from __future__ import annotations

import typer

from metrica_bridge.check import check
from metrica_bridge.commands import run
from metrica_bridge.demo import demo
from metrica_bridge.metrica.schema_sync import schema_sync
from metrica_bridge.replay.command import replay_command
from metrica_bridge.sandbox.command import sandbox as sandbox_command
from metrica_bridge.simulate.command import simulate

app = typer.Typer(
    name="metrica-bridge",
    help="CRM events from Kafka to Yandex Metrica's CDP API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold the token
)
app.command("run")(run)
app.command("check")(check)
app.command("sandbox")(sandbox_command)

app.command("schema-sync")(schema_sync)
app.command("simulate")(simulate)
app.command("replay")(replay_command)
app.command("demo")(demo)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
