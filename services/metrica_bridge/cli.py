"""The ``metrica-bridge`` command line (DESIGN.md §6).

Each command lives beside the code it drives; this module only wires them together.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="metrica-bridge",
    help="CRM events from Kafka to Yandex Metrica's CDP API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold the token
)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
