"""Decode (Avro) and validate (the event contract) one consumed record.

A bad record is returned with its class and a reason for the DLQ, never raised. The one
exception that escapes is :class:`SchemaUnavailable`: the Schema Registry could not be asked
right now, which is our outage, not the record's fault, so it is retried, not dead-lettered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from metrica_bridge.codec import Codec, DecodeError, SchemaUnavailable
from metrica_bridge.events import Event, EventKind, InvalidEvent, LeadCreated, expected_kind
from metrica_bridge.events import parse_event as validate
from metrica_bridge.kafka.record import SourceRecord
from metrica_bridge.metrics import IDENTIFIERS_DROPPED
from metrica_bridge.outcomes import ErrorClass

Poison = tuple[ErrorClass, str]


async def resolve_schemas(codec: Codec, sources: Iterable[SourceRecord]) -> None:
    """Ask the Schema Registry, in a worker thread, for the schema ids of ``sources`` the
    codec has not seen, so that :func:`parse` then decodes them from its cache without
    blocking the event loop. A registry that cannot be asked is remembered by the codec:
    ``parse`` raises ``SchemaUnavailable`` for those records (retried), as before."""
    ids = codec.unresolved(s.value for s in sources)
    if ids:
        await asyncio.to_thread(codec.resolve, ids)


def parse(codec: Codec, kinds: Mapping[str, EventKind], source: SourceRecord) -> Event | Poison:
    try:
        decoded = codec.decode(source.value)
    except SchemaUnavailable:
        raise
    except DecodeError as exc:
        return ErrorClass.DECODE_ERROR, exc.reason
    try:
        event = validate(decoded.schema_name, decoded.record)
        expected_kind(event, kinds[source.topic])
    except InvalidEvent as exc:
        return ErrorClass.INVALID_EVENT, exc.reason
    if source.key is None:
        # The key is the entity id (DESIGN.md §2): without it the record would run in a lane of
        # its own, beside its deal's other events instead of in order with them.
        return ErrorClass.INVALID_EVENT, "record has no key"
    if source.key.decode("utf-8", "replace") != event.key:
        return ErrorClass.INVALID_EVENT, "record key does not match the event's entity id"
    if isinstance(event, LeadCreated) and event.dropped_identifiers:
        IDENTIFIERS_DROPPED.labels(topic=source.topic).inc(event.dropped_identifiers)
    return event
