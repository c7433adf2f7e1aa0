"""A tiny but real Confluent Schema Registry for tests: HTTP on a free 127.0.0.1 port.

Serves the two calls metrica-bridge makes (``GET /schemas/ids/{id}``,
``POST /subjects/{subject}/versions``) with the registry's status codes and error bodies, counts
the requests it gets, and can be told to fail (``fail_status``) or stopped to look unreachable.

    with SchemaRegistryServer() as registry:
        codec = Codec.from_dir(SCHEMAS_DIR, registry.url)
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error_code": code, "message": message}, status_code=status, media_type=CONTENT_TYPE
    )


class SchemaRegistryServer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.schemas: dict[int, str] = {}  # id → schema text as registered
        self.subjects: dict[str, list[int]] = {}  # subject → ids, one per version
        self._ids_by_schema: dict[str, int] = {}
        self.requests: Counter[str] = Counter()  # "GET /schemas/ids/1" → count
        self.fail_status: int | None = None  # answer every request with this status
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self.app = Starlette(
            routes=[
                Route("/schemas/ids/{schema_id:int}", self._get_schema, methods=["GET"]),
                Route("/subjects/{subject}/versions", self._register, methods=["POST"]),
            ]
        )

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def reset(self) -> None:
        """Forget every schema, subject, request count and injected failure."""
        with self._lock:
            self.schemas.clear()
            self.subjects.clear()
            self._ids_by_schema.clear()
            self.requests.clear()
            self.fail_status = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def lookups(self, schema_id: int) -> int:
        """How many times ``GET /schemas/ids/{schema_id}`` was asked."""
        return self.requests[f"GET /schemas/ids/{schema_id}"]

    def add(self, schema: dict[str, Any] | str, subject: str | None = None) -> int:
        """Register a schema directly (as another producer would) and return its id."""
        text = schema if isinstance(schema, str) else json.dumps(schema)
        with self._lock:
            return self._add_locked(text, subject)

    def _add_locked(self, text: str, subject: str | None) -> int:
        try:
            key = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
        except ValueError:
            key = text
        schema_id = self._ids_by_schema.get(key)
        if schema_id is None:
            # Ids are global across subjects and never reused, as in Confluent's registry.
            schema_id = len(self.schemas) + 1
            self.schemas[schema_id] = text
            self._ids_by_schema[key] = schema_id
        if subject is not None:
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
        return schema_id

    async def _get_schema(self, request: Request) -> Response:
        schema_id: int = request.path_params["schema_id"]
        with self._lock:
            self.requests[f"GET /schemas/ids/{schema_id}"] += 1
            if self.fail_status is not None:
                return _error(self.fail_status, self.fail_status * 100, "injected failure")
            text = self.schemas.get(schema_id)
        if text is None:
            return _error(404, 40403, f"Schema {schema_id} not found")
        return JSONResponse({"schema": text}, media_type=CONTENT_TYPE)

    async def _register(self, request: Request) -> Response:
        subject: str = request.path_params["subject"]
        body = await request.body()
        with self._lock:
            self.requests[f"POST /subjects/{subject}/versions"] += 1
            if self.fail_status is not None:
                return _error(self.fail_status, self.fail_status * 100, "injected failure")
            try:
                payload = json.loads(body)
                text = payload["schema"]
                json.loads(text)
            except (ValueError, KeyError, TypeError):
                return _error(422, 42201, "Invalid schema")
            schema_id = self._add_locked(text, subject)
        return JSONResponse({"id": schema_id}, media_type=CONTENT_TYPE)

    def start(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="schema-registry", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test schema registry did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving; the port then refuses connections (a registry outage)."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
