"""The writer schemas we know: the current files in ``schemas/`` plus ``schemas/history/``.

Layout (see ``schemas/README.md``)::

    schemas/lead_created.avsc                 current version (also the reader schema)
    schemas/history/LeadCreated/v1.avsc       older versions, never deleted

The current file's version number is one more than the highest one in its history directory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from metrica_bridge.events import SCHEMA_FILES

HISTORY_DIR = "history"
_VERSION_FILE = re.compile(r"^v([1-9]\d*)\.avsc$")
_PRIMITIVE_WIDTH = {
    "null": 0,
    "boolean": 1,
    "int": 1,
    "long": 1,
    "float": 4,
    "double": 8,
    "bytes": 1,
    "string": 1,
}


class SchemaLoadError(ValueError):
    """A schema file or a registry schema we refuse to decode with."""


@dataclass(frozen=True, slots=True)
class WriterSchema:
    """One writer schema and how to read records written with it."""

    name: str  # full record name, e.g. "crm.events.LeadCreated"
    version: str  # "v1", "v2", … for local files; "registry:<id>" for registry-only schemas
    writer: dict[str, Any]  # parsed (fastavro) writer schema
    reader: dict[str, Any] | None  # parsed current schema; None when the writer *is* the current
    source: dict[str, Any]  # the schema as written, for registering it
    fingerprint: bytes  # CRC-64-AVRO of the Parsing Canonical Form, little-endian (8 bytes)


def crc64_fingerprint(schema: Mapping[str, Any]) -> bytes:
    """Single-object encoding fingerprint: CRC-64-AVRO of the Parsing Canonical Form, LE."""
    # fastavro's hex digest is already the little-endian byte order the spec puts on the wire.
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(dict(schema)), "CRC-64-AVRO"))


def parse(source: dict[str, Any], *, origin: str) -> dict[str, Any]:
    """Parse a writer or reader schema and refuse shapes that would let input bytes DoS us."""
    try:
        parsed = parse_schema(source)
    except Exception as exc:
        raise SchemaLoadError(f"{origin}: not a valid Avro schema ({type(exc).__name__})") from exc
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise SchemaLoadError(f"{origin}: the top-level type is not a record")
    if _has_zero_width_array(parsed, parsed.get("__named_schemas", {})):
        # An array whose items take no bytes lets a 10-byte message claim 2**63 items, each
        # costing CPU and memory without consuming input; no CRM event needs one.
        raise SchemaLoadError(f"{origin}: an array of zero-width items is not supported")
    return parsed


def _min_width(schema: Any, named: Mapping[str, Any], visiting: set[str]) -> int:
    """Fewest bytes one value of this type can take on the wire."""
    if isinstance(schema, str):
        if schema in _PRIMITIVE_WIDTH:
            return _PRIMITIVE_WIDTH[schema]
        if schema in visiting:
            # A record can only contain itself through a union or an array, both >= 1 byte.
            return 1
        return _min_width(named.get(schema, "bytes"), named, visiting)
    if isinstance(schema, list):
        return 1  # the branch index
    if not isinstance(schema, dict):
        return 1
    kind = schema.get("type")
    if kind in ("record", "error"):
        name = str(schema.get("name"))
        visiting = visiting | {name}
        return sum(_min_width(f["type"], named, visiting) for f in schema.get("fields", ()))
    if kind == "fixed":
        return int(schema.get("size", 0))
    if kind in ("enum", "array", "map"):
        return 1
    return _min_width(kind, named, visiting)


def _has_zero_width_array(
    schema: Any, named: Mapping[str, Any], seen: set[int] | None = None
) -> bool:
    seen = set() if seen is None else seen
    if isinstance(schema, list):
        return any(_has_zero_width_array(branch, named, seen) for branch in schema)
    if not isinstance(schema, dict) or id(schema) in seen:
        return False
    seen.add(id(schema))
    kind = schema.get("type")
    if kind in ("record", "error"):
        return any(_has_zero_width_array(f["type"], named, seen) for f in schema.get("fields", ()))
    if kind == "array":
        items = schema.get("items")
        return _min_width(items, named, set()) == 0 or _has_zero_width_array(items, named, seen)
    if kind == "map":
        return _has_zero_width_array(schema.get("values"), named, seen)
    return isinstance(kind, dict | list) and _has_zero_width_array(kind, named, seen)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaLoadError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise SchemaLoadError(f"{path}: not a JSON object")
    return data


def _check_name(parsed: dict[str, Any], expected: str, path: Path) -> None:
    if parsed.get("name") != expected:
        raise SchemaLoadError(f"{path}: record is {parsed.get('name')!r}, expected {expected!r}")


def load_versions(schemas_dir: Path) -> dict[str, list[WriterSchema]]:
    """Every known version of every event schema, oldest first; the last one is current."""
    versions: dict[str, list[WriterSchema]] = {}
    for full_name, file_name in SCHEMA_FILES.items():
        current_path = schemas_dir / file_name
        current_source = _read_json(current_path)
        current = parse(current_source, origin=str(current_path))
        _check_name(current, full_name, current_path)

        history_dir = schemas_dir / HISTORY_DIR / full_name.rsplit(".", 1)[-1]
        numbered: list[tuple[int, Path]] = []
        if history_dir.is_dir():
            for path in history_dir.iterdir():
                match = _VERSION_FILE.match(path.name)
                if match is None:
                    raise SchemaLoadError(f"{path}: history files are named v<N>.avsc")
                numbered.append((int(match.group(1)), path))
        numbered.sort()

        entries: list[WriterSchema] = []
        for number, path in numbered:
            source = _read_json(path)
            writer = parse(source, origin=str(path))
            _check_name(writer, full_name, path)
            entries.append(
                WriterSchema(
                    name=full_name,
                    version=f"v{number}",
                    writer=writer,
                    reader=current,
                    source=source,
                    fingerprint=crc64_fingerprint(source),
                )
            )
        current_number = numbered[-1][0] + 1 if numbered else 1
        entries.append(
            WriterSchema(
                name=full_name,
                version=f"v{current_number}",
                writer=current,
                reader=None,
                source=current_source,
                fingerprint=crc64_fingerprint(current_source),
            )
        )
        versions[full_name] = entries
    return versions
