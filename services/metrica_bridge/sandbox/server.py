"""Run the sandbox in a background thread: for tests, benchmarks and the demo.

with SandboxServer(tokens=["t0k"], counter_ids=[42]) as sb:
    sb.url           # "http://127.0.0.1:<port>", what METRICA_API_URL points at
    sb.orders(42)    # current orders with their history
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from metrica_bridge.sandbox.app import create_app
from metrica_bridge.sandbox.core import Sandbox
from metrica_bridge.sandbox.quotas import QuotaLimits


class SandboxServer:
    def __init__(
        self,
        tokens: Iterable[str],
        counter_ids: Iterable[int],
        timezone: str = "Europe/Moscow",
        host: str = "127.0.0.1",
        port: int = 0,
        state_path: str | Path | None = None,
        limits: QuotaLimits | None = None,
        log_requests: bool = False,
        requests_per_day: int | None = None,
        quota_day_s: int | None = None,
        products: Iterable[str] | None = None,
        goals: Iterable[str] = (),
    ) -> None:
        self.sandbox = Sandbox(
            tokens,
            counter_ids,
            timezone,
            state_path,
            limits,
            requests_per_day=requests_per_day,
            quota_day_s=quota_day_s,
            products=products,
            goals=goals,
        )
        self._app = create_app(self.sandbox, log_requests=log_requests)
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None
        self._stopped = False
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> SandboxServer:
        """Binds (port 0 picks a free one), serves in a thread, returns once it answers."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("a SandboxServer starts once: make a new one to restart")
        # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on sockets that say so,
        # and without it every keep-alive request waits ~40 ms for a delayed ACK.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        port = sock.getsockname()[1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.run(sockets=[sock]), name="metrica-sandbox", daemon=True
        )
        self._thread.start()
        self._client = httpx.Client(base_url=self.url, timeout=10.0)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self._client.get("/_sandbox/health").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError("the sandbox did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None
        if not self._stopped:
            self._stopped = True
            self.sandbox.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers (over HTTP, so they see exactly what a client would) ----------------------

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        if self._client is None:
            raise RuntimeError("the sandbox is not running")
        response = self._client.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    def contacts(self, counter_id: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(
            "GET", f"/_sandbox/counters/{counter_id}/contacts"
        )["contacts"]
        return result

    def orders(self, counter_id: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", f"/_sandbox/counters/{counter_id}/orders")[
            "orders"
        ]
        return result

    def uploads(self, counter_id: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(
            "GET", f"/_sandbox/counters/{counter_id}/uploads"
        )["uploads"]
        return result

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Merges into the current faults (see ``POST /_sandbox/faults``); returns them all."""
        state: dict[str, Any] = self._call("POST", "/_sandbox/faults", faults)
        return state

    def faults(self) -> dict[str, Any]:
        state: dict[str, Any] = self._call("GET", "/_sandbox/faults")
        return state

    def stats(self) -> dict[str, Any]:
        """Quota usage per quota day (see ``GET /_sandbox/stats``)."""
        state: dict[str, Any] = self._call("GET", "/_sandbox/stats")
        return state

    def reset(self) -> None:
        """Clears data, faults and quota usage."""
        self._call("POST", "/_sandbox/reset")
