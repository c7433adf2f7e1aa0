"""Avro codec for CRM events: single-object encoding and the Confluent wire format (DESIGN.md §2).

``decode`` is on the consumer's hot path and raises only :class:`DecodeError` (or its subclass
:class:`SchemaUnavailable`): whatever the bytes, the engine gets a record or a reason it can
put in a DLQ header.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from metrica_bridge.codec.errors import DecodeError, SchemaUnavailable
from metrica_bridge.codec.registry import RegistryClient
from metrica_bridge.codec.schemas import (
    SchemaLoadError,
    WriterSchema,
    crc64_fingerprint,
    load_versions,
    parse,
)
from metrica_bridge.logs import get_logger

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_SINGLE_OBJECT_HEADER = 10  # 2 magic bytes + 8-byte fingerprint
_CONFLUENT_HEADER = 5  # magic byte + 4-byte schema id
_MAX_NEGATIVE_ENTRIES = 10_000

log = get_logger(__name__)


class WireFormat(StrEnum):
    SINGLE_OBJECT = "single-object"
    CONFLUENT = "confluent"


@dataclass(frozen=True, slots=True)
class Decoded:
    schema_name: str  # full name, e.g. "crm.events.DealStatusChanged"
    record: dict[str, Any]  # in the current (reader) schema's shape, defaults filled
    wire: WireFormat


class Codec:
    """Decodes and encodes CRM event records. Thread-safe; one instance per process is enough."""

    def __init__(
        self,
        versions: Mapping[str, list[WriterSchema]],
        registry: RegistryClient | None = None,
        *,
        negative_ttl_s: float = 30.0,
        outage_backoff_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._versions = {name: tuple(entries) for name, entries in versions.items()}
        # Oldest first, so a version whose canonical form did not change maps to the newest.
        self._by_header = {
            SINGLE_OBJECT_MAGIC + e.fingerprint: e for es in self._versions.values() for e in es
        }
        self._registry = registry
        self._negative_ttl_s = negative_ttl_s
        self._outage_backoff_s = outage_backoff_s
        self._clock = clock
        self._lock = threading.Lock()
        self._by_id: dict[int, WriterSchema] = {}
        self._unknown_ids: dict[int, tuple[float, str]] = {}  # id → (retry after, reason)
        self._registry_down_until = float("-inf")
        self._registry_down_reason = ""
        self._registered: dict[tuple[str, str, str], int] = {}  # (subject, name, version) → id

    @classmethod
    def from_dir(
        cls,
        schemas_dir: Path,
        registry_url: str | None = None,
        *,
        registry_timeout_s: float = 5.0,
        negative_ttl_s: float = 30.0,
        outage_backoff_s: float = 1.0,
    ) -> Codec:
        """Load every schema version in ``schemas_dir``; raises ``SchemaLoadError`` on bad files."""
        versions = load_versions(Path(schemas_dir))
        registry = (
            RegistryClient(registry_url, timeout_s=registry_timeout_s) if registry_url else None
        )
        return cls(
            versions,
            registry,
            negative_ttl_s=negative_ttl_s,
            outage_backoff_s=outage_backoff_s,
        )

    @property
    def schema_names(self) -> tuple[str, ...]:
        return tuple(self._versions)

    def versions(self, schema_name: str) -> tuple[str, ...]:
        """Known writer versions of one schema, oldest first; the last is the current one."""
        return tuple(e.version for e in self._entries(schema_name))

    # -- decoding (hot path) ------------------------------------------------------------------

    def decode(self, value: bytes | None) -> Decoded:
        if not value:
            raise DecodeError("empty value")
        # The common case first, with one lookup: magic bytes and fingerprint as one key.
        entry = self._by_header.get(value[:_SINGLE_OBJECT_HEADER])
        if entry is not None:
            return Decoded(
                entry.name, _read(entry, value, _SINGLE_OBJECT_HEADER), WireFormat.SINGLE_OBJECT
            )
        magic = value[0]
        if magic == 0x00:
            if len(value) < _CONFLUENT_HEADER:
                raise DecodeError("truncated confluent header")
            entry = self._writer_for_id(int.from_bytes(value[1:_CONFLUENT_HEADER], "big"))
            return Decoded(entry.name, _read(entry, value, _CONFLUENT_HEADER), WireFormat.CONFLUENT)
        if magic != 0xC3:
            raise DecodeError(f"unknown magic byte 0x{magic:02x}")
        if len(value) < _SINGLE_OBJECT_HEADER:
            raise DecodeError("truncated single-object header")
        if value[1] != 0x01:
            raise DecodeError(f"unknown single-object format version 0x{value[1]:02x}")
        raise DecodeError(f"unknown schema fingerprint {value[2:_SINGLE_OBJECT_HEADER].hex()}")

    def unresolved(self, values: Iterable[bytes | None]) -> set[int]:
        """Schema ids of Confluent-framed ``values`` that :meth:`decode` would have to ask the
        registry for: not cached, not known to be unknown, the registry not known to be down.
        A dictionary look-up each, no request: the caller resolves them (:meth:`resolve`) off
        the event loop first, so that decoding them there never waits for the network."""
        if self._registry is None:
            return set()
        now = self._clock()
        if self._registry_down_until > now:
            return set()
        ids: set[int] = set()
        for value in values:
            if value and len(value) >= _CONFLUENT_HEADER and value[0] == 0x00:
                schema_id = int.from_bytes(value[1:_CONFLUENT_HEADER], "big")
                if schema_id not in self._by_id:
                    unknown = self._unknown_ids.get(schema_id)
                    if unknown is None or unknown[0] <= now:
                        ids.add(schema_id)
        return ids

    def resolve(self, schema_ids: Iterable[int]) -> None:
        """Ask the registry for these schema ids now (blocking: call it in a worker thread).
        Nothing is raised: what it learns is remembered for :meth:`decode` to answer at once,
        the schema, or that the id is unknown (``DecodeError``), or that the registry is down
        (``SchemaUnavailable`` for ``outage_backoff_s`` after the failed call ended)."""
        for schema_id in sorted(schema_ids):
            with contextlib.suppress(DecodeError):
                self._writer_for_id(schema_id)

    def _writer_for_id(self, schema_id: int) -> WriterSchema:
        entry = self._by_id.get(schema_id)
        if entry is not None:
            return entry
        if self._registry is None:
            raise DecodeError("confluent-framed value but no schema registry is configured")
        # One lookup at a time: a burst of messages with a new id costs one request, not many.
        with self._lock:
            entry = self._by_id.get(schema_id)
            if entry is not None:
                return entry
            now = self._clock()
            unknown = self._unknown_ids.get(schema_id)
            if unknown is not None and unknown[0] > now:
                raise DecodeError(unknown[1])
            if self._registry_down_until > now:
                raise SchemaUnavailable(self._registry_down_reason)
            try:
                entry = self._writer_from_registry(
                    schema_id, self._registry.schema_by_id(schema_id)
                )
            except SchemaUnavailable as exc:
                # From when the failed call ended, not began: a call that waited out its
                # timeout must not leave the next decode to wait for another one at once.
                self._registry_down_until = self._clock() + self._outage_backoff_s
                self._registry_down_reason = exc.reason
                log.warning("schema registry unavailable", schema_id=schema_id, reason=exc.reason)
                raise
            except DecodeError as exc:
                self._remember_unknown(schema_id, exc.reason, now)
                raise
            self._by_id[schema_id] = entry
            self._unknown_ids.pop(schema_id, None)
            return entry

    def _writer_from_registry(self, schema_id: int, source: dict[str, Any]) -> WriterSchema:
        for entries in self._versions.values():
            for known in entries:
                if known.source == source:
                    # One of ours (usually): reuse it, including the no-resolution fast path.
                    return known
        origin = f"schema id {schema_id}"
        try:
            writer = parse(source, origin=origin)
            fingerprint = crc64_fingerprint(source)
        except SchemaLoadError as exc:
            raise DecodeError(str(exc)) from None
        except Exception as exc:
            raise DecodeError(f"{origin}: unusable schema ({type(exc).__name__})") from None
        name = str(writer.get("name"))
        current = self._versions.get(name)
        if current is None:
            raise DecodeError(f"{origin} is record {name[:80]!r}, not a CRM event type")
        return WriterSchema(
            name=name,
            version=f"registry:{schema_id}",
            writer=writer,
            reader=current[-1].writer,
            source=source,
            fingerprint=fingerprint,
        )

    def _remember_unknown(self, schema_id: int, reason: str, now: float) -> None:
        if len(self._unknown_ids) >= _MAX_NEGATIVE_ENTRIES:
            self._unknown_ids = {k: v for k, v in self._unknown_ids.items() if v[0] > now}
            if len(self._unknown_ids) >= _MAX_NEGATIVE_ENTRIES:
                self._unknown_ids.clear()
        self._unknown_ids[schema_id] = (now + self._negative_ttl_s, reason)

    # -- encoding -----------------------------------------------------------------------------

    def encode(
        self,
        schema_name: str,
        record: Mapping[str, Any],
        wire: WireFormat = WireFormat.SINGLE_OBJECT,
        *,
        writer_version: str | None = None,
        subject: str | None = None,
    ) -> bytes:
        """Encode ``record`` with one known writer version (default: the current one).

        ``writer_version`` is a label from :meth:`versions` (``"v1"``; ``"1"`` works too).
        Confluent framing registers the writer schema under ``subject`` (default: the schema's
        full name), once per codec. Raises ``ValueError`` for an unknown schema or version, a
        record that does not fit the schema, or Confluent framing without a registry, and
        :class:`SchemaUnavailable` when the registry cannot be reached.
        """
        entry = self._version(schema_name, writer_version)
        out = BytesIO()
        if wire == WireFormat.SINGLE_OBJECT:
            out.write(SINGLE_OBJECT_MAGIC)
            out.write(entry.fingerprint)
        elif wire == WireFormat.CONFLUENT:
            out.write(CONFLUENT_MAGIC)
            out.write(self._register(entry, subject or schema_name).to_bytes(4, "big"))
        else:
            raise ValueError(f"unknown wire format {wire!r}")
        try:
            schemaless_writer(out, entry.writer, record)
        except Exception as exc:
            raise ValueError(
                f"record does not fit {schema_name} {entry.version} ({type(exc).__name__})"
            ) from exc
        return out.getvalue()

    def _entries(self, schema_name: str) -> tuple[WriterSchema, ...]:
        entries = self._versions.get(schema_name)
        if entries is None:
            raise ValueError(f"unknown schema {schema_name!r}; known: {', '.join(self._versions)}")
        return entries

    def _version(self, schema_name: str, writer_version: str | None) -> WriterSchema:
        entries = self._entries(schema_name)
        if writer_version is None or writer_version == "current":
            return entries[-1]
        label = writer_version if writer_version.startswith("v") else f"v{writer_version}"
        for entry in entries:
            if entry.version == label:
                return entry
        known = ", ".join(e.version for e in entries)
        raise ValueError(f"{schema_name} has no version {writer_version!r}; known: {known}")

    def _register(self, entry: WriterSchema, subject: str) -> int:
        if self._registry is None:
            raise ValueError(
                "the Confluent wire format needs a schema registry (SCHEMA_REGISTRY_URL)"
            )
        key = (subject, entry.name, entry.version)
        schema_id = self._registered.get(key)
        if schema_id is None:
            schema_id = self._registry.register(subject, entry.source)
            with self._lock:
                self._registered[key] = schema_id
                # We know exactly what this id holds: decoding it needs no lookup.
                self._by_id.setdefault(schema_id, entry)
                self._unknown_ids.pop(schema_id, None)
        return schema_id

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()

    def __enter__(self) -> Codec:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read(entry: WriterSchema, value: bytes, offset: int) -> dict[str, Any]:
    stream = BytesIO(value)  # shares the bytes object's buffer; no copy
    stream.seek(offset)
    try:
        record = schemaless_reader(stream, entry.writer, entry.reader)
    except Exception as exc:
        # fastavro signals malformed input with whatever the failing step raised (EOFError,
        # ValueError, IndexError, UnicodeDecodeError, struct.error, OverflowError, MemoryError,
        # RecursionError, SchemaResolutionError, …). Only the class name goes into the reason:
        # the message may quote payload bytes.
        raise DecodeError(
            f"malformed Avro body for {entry.name} {entry.version} ({type(exc).__name__})"
        ) from None
    trailing = len(value) - stream.tell()
    if trailing:
        raise DecodeError(f"{trailing} trailing bytes after the {entry.name} record")
    if not isinstance(record, dict):
        raise DecodeError(f"{entry.name} body is not a record")
    return record
