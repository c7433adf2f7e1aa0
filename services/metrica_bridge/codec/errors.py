"""Decode failures. ``reason`` is short and safe to log or to put in a DLQ header."""

from __future__ import annotations


class DecodeError(Exception):
    """The value is not exactly one valid CRM event record: dead-letter it as ``decode_error``.

    The reason never carries payload bytes or field values (they may be personal data); at most
    a magic byte, a schema fingerprint or id, a record type name and an exception class.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SchemaUnavailable(DecodeError):
    """The writer schema could not be fetched because the Schema Registry is down or refusing us.

    The message itself may be fine, so the engine should retry (pause and back off) rather than
    dead-letter it; see ``docs/decisions.md``. An id the registry does not know is *not* this
    error: that is a plain :class:`DecodeError`.
    """
