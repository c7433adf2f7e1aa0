"""A minimal Confluent Schema Registry client: fetch a schema by id, register a schema.

Only the two calls the codec needs. Errors are typed for the engine: an id the registry does not
know is a :class:`DecodeError` (dead-letter), a registry we cannot reach or that answers 5xx,
401 or 403 is :class:`SchemaUnavailable` (retry). Reasons never contain the registry URL, which
may carry credentials.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx

from metrica_bridge.codec.errors import DecodeError, SchemaUnavailable

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryClient:
    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            timeout=timeout_s,
            headers={"Accept": CONTENT_TYPE},
        )

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        """The writer schema (parsed JSON) registered under ``schema_id``."""
        response = self._request("GET", f"/schemas/ids/{schema_id}")
        if response.status_code == 404:
            raise DecodeError(f"schema id {schema_id} is unknown to the schema registry")
        body = self._json(response, f"schema id {schema_id}")
        schema_type = body.get("schemaType", "AVRO")
        if schema_type != "AVRO":
            raise DecodeError(
                f"schema id {schema_id} is a {str(schema_type)[:16]} schema, not Avro"
            )
        text = body.get("schema")
        if not isinstance(text, str):
            raise DecodeError(f"schema id {schema_id}: registry answer has no schema")
        try:
            schema = json.loads(text)
        except ValueError:
            raise DecodeError(f"schema id {schema_id}: registry schema is not JSON") from None
        if not isinstance(schema, dict):
            raise DecodeError(f"schema id {schema_id}: registry schema is not a record")
        return schema

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Register ``schema`` under ``subject`` (idempotent in the registry) and return its id."""
        payload = {"schema": json.dumps(schema, separators=(",", ":"))}
        response = self._request(
            "POST",
            f"/subjects/{quote(subject, safe='')}/versions",
            json=payload,
            headers={"Content-Type": CONTENT_TYPE},
        )
        if response.status_code != 200:
            # 409 incompatible, 422 invalid: the caller's schema or subject is wrong.
            raise ValueError(
                f"the schema registry refused the schema for subject {subject!r} "
                f"(HTTP {response.status_code})"
            )
        body = self._json(response, f"subject {subject!r}")
        schema_id = body.get("id")
        if not isinstance(schema_id, int):
            raise SchemaUnavailable("schema registry registration answer has no id")
        return schema_id

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise SchemaUnavailable(f"schema registry unreachable ({type(exc).__name__})") from None
        status = response.status_code
        if status >= 500 or status in (401, 403, 429):
            raise SchemaUnavailable(f"schema registry answered HTTP {status}")
        return response

    @staticmethod
    def _json(response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code != 200:
            raise DecodeError(f"{what}: schema registry answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise SchemaUnavailable("schema registry answer is not JSON") from None
        if not isinstance(body, dict):
            raise SchemaUnavailable("schema registry answer is not a JSON object")
        return body
