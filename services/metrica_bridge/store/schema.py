"""The schema migrations packaged with the service, one folder per SQL dialect."""

from __future__ import annotations

import re
from importlib import resources

_MIGRATION_NAME = re.compile(r"^(\d{4})_[\w-]+\.sql$")


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of the packaged migrations of a dialect, in version order."""
    folder = resources.files("metrica_bridge.store").joinpath("migrations", dialect)
    found: list[tuple[int, str, str]] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [version for version, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two {dialect} migrations share a version number")
    return found
