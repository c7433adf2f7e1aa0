"""Avro codec for CRM events (DESIGN.md §2): single-object encoding and the Confluent format."""

from metrica_bridge.codec.codec import Codec, Decoded, WireFormat
from metrica_bridge.codec.errors import DecodeError, SchemaUnavailable
from metrica_bridge.codec.schemas import SchemaLoadError

__all__ = ["Codec", "DecodeError", "Decoded", "SchemaLoadError", "SchemaUnavailable", "WireFormat"]
