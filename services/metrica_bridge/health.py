"""``METRICS_PORT``: Prometheus ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (partitions
assigned, store reachable, no setup error). A plain threaded HTTP server: it must answer even
when the event loop is busy, which is exactly when an operator looks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from metrica_bridge.logs import redact
from metrica_bridge.metrics import REGISTRY

Check = Callable[[], tuple[bool, str]]


class HealthServer:
    def __init__(self, port: int, alive: Check, ready: Check, host: str = "0.0.0.0") -> None:
        """``host``: ``METRICS_HOST``; 127.0.0.1 keeps the endpoints off the network (tests,
        the demo), the default 0.0.0.0 lets Prometheus and the kubelet reach them."""
        checks = {"/healthz": alive, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                elif path in checks:
                    try:
                        ok, detail = checks[path]()
                    except Exception as exc:
                        ok, detail = False, f"check failed: {type(exc).__name__}"
                    # Reasons quote errors (a setup error's text): same masking as the logs.
                    body = (redact(detail) + "\n").encode()
                    self._answer(200 if ok else 503, body, "text/plain; charset=utf-8")
                else:
                    self._answer(404, b"not found\n", "text/plain")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds would drown the logs

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
