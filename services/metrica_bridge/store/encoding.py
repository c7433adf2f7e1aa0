"""Values as the store holds them: times, identifier lists, record headers and payments.

Both backends write the same encodings, so a row written by one version reads back in the
next whatever the backend; the rules that decide what to write live in ``rules``."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def utc(dt: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already (the events' times are UTC)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def to_us(dt: datetime) -> int:
    """Exact microseconds since the epoch (no float rounding)."""
    return (utc(dt) - EPOCH) // _US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def now_utc() -> datetime:
    return datetime.now(UTC)


# Reused: json.dumps with options builds a new encoder per call, which shows on the hot path.
_COMPACT = json.JSONEncoder(separators=(",", ":"))
_SORTED = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def encode_list(values: Sequence[str]) -> str:
    return _COMPACT.encode(list(values)) if values else "[]"


def encode_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    if not headers:
        return "[]"
    return _COMPACT.encode(
        [[name, base64.b64encode(value).decode("ascii")] for name, value in headers]
    )


def decode_headers(raw: str | Sequence[Sequence[str]]) -> tuple[tuple[str, bytes], ...]:
    pairs = json.loads(raw) if isinstance(raw, str) else raw
    return tuple((str(name), base64.b64decode(value)) for name, value in pairs)


def encode_payments(payments: Mapping[str, Decimal]) -> str:
    if not payments:
        return "{}"
    return _SORTED.encode({pid: str(amount) for pid, amount in payments.items()})


def decode_payments(raw: str | Mapping[str, str]) -> dict[str, Decimal]:
    if not raw or raw == "{}":
        return {}
    data = json.loads(raw) if isinstance(raw, str) else raw
    return {str(pid): Decimal(str(amount)) for pid, amount in data.items()}
