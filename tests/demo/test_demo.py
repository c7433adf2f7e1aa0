"""``metrica-bridge demo`` as a user runs it: a real process with its own broker and sandbox.

Output goes to a pipe, so the demo prints plain lines and its summary as text.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from metrica_bridge.config import PROJECT_ROOT

pytestmark = pytest.mark.kafka

ACCOUNTED = re.compile(r"accounted for: ([\d,]+) of ([\d,]+) produced events")
BROKER_PID = re.compile(r"Kafka \(tansu\)\s+127\.0\.0\.1:\d+\s+\(pid (\d+)\)")
WORKDIR = re.compile(r"(/\S*metrica-bridge-demo-[^/\s]+)/service\.log")
CONSUMED = re.compile(r"\| consumed ([\d,]+) ")


def _number(text: str) -> int:
    return int(text.replace(",", ""))


@dataclass
class DemoProcess:
    args: list[str]
    proc: subprocess.Popen[str] = field(init=False)
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread = field(init=False)

    def start(self) -> DemoProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "metrica_bridge.cli", "demo", *self.args],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = pattern.search(line)
                if found:
                    return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {pattern.pattern!r} in the output:\n{self.output[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def run_demo() -> Iterator[list[DemoProcess]]:
    started: list[DemoProcess] = []
    yield started
    for demo in started:  # a failed test must not leave a demo (and its broker) behind
        demo.kill()


def _start(started: list[DemoProcess], *args: str) -> DemoProcess:
    demo = DemoProcess(list(args)).start()
    started.append(demo)
    return demo


def _row(output: str, label: str) -> tuple[int, str]:
    """A summary row: ``label │ number │ detail`` (ASCII bars on terminals without UTF-8)."""
    found = re.search(
        rf"^[│|] {re.escape(label)}\s+[│|]\s+([\d,]+)\s+[│|] (.*?)\s*[│|]$", output, re.M
    )
    assert found, f"no summary row {label!r} in:\n{output[-3000:]}"
    return _number(found.group(1)), found.group(2)


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may never reap an orphan)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = re.search(r"^State:\s+(\w)", status, re.MULTILINE)
    return state is not None and state.group(1) not in ("Z", "X")


def _assert_cleaned_up(output: str) -> None:
    broker = BROKER_PID.search(output)
    assert broker, output[-3000:]
    assert not _running(int(broker.group(1))), "the tansu broker outlived the demo"
    workdir = WORKDIR.search(output)
    assert workdir, output[-3000:]
    assert not Path(workdir.group(1)).exists(), "the demo's temp dir was left behind"


def test_every_produced_event_is_accounted_for(run_demo: list[DemoProcess]) -> None:
    demo = _start(run_demo, "--events", "2000", "--rate", "0", "--seed", "11", "--exit-when-done")
    code = demo.wait(timeout=120)
    output = demo.output
    assert code == 0, output[-3000:]
    accounted = ACCOUNTED.search(output)
    assert accounted, output[-3000:]
    assert _number(accounted.group(1)) == _number(accounted.group(2)) == 2000
    # The summary's rows: what the simulator made, and what became of it.
    produced, fates = _row(output, "produced")
    assert produced == 2000
    assert fates.startswith("by fate: ok ")
    assert _row(output, "consumed")[0] == 2000
    assert _row(output, "delivered")[0] > 0
    dead_lettered = _row(output, "dead-lettered")[1]
    assert "decode_error" in dead_lettered
    assert "invalid_event" in dead_lettered
    assert _row(output, "Metrica orders")[0] > 0
    assert "/_sandbox/counters/" in output
    assert "/metrics" in output
    _assert_cleaned_up(output)


def test_ctrl_c_stops_everything_cleanly(run_demo: list[DemoProcess]) -> None:
    # More events than it will get through: the interrupt lands mid-run.
    demo = _start(run_demo, "--events", "100000", "--rate", "300", "--seed", "12")
    demo.wait_for(re.compile(r"\| consumed [1-9]"), timeout=60)
    assert ACCOUNTED.search(demo.output) is None
    demo.proc.send_signal(signal.SIGINT)
    code = demo.wait(timeout=30)
    output = demo.output
    assert code == 0, output[-3000:]
    assert "stopped in" in output
    assert "did not drain in time" not in output, output[-3000:]
    _assert_cleaned_up(output)


@pytest.mark.postgres
def test_postgres_store(run_demo: list[DemoProcess]) -> None:
    demo = _start(
        run_demo, "--events", "300", "--rate", "0", "--store", "postgres", "--exit-when-done"
    )
    code = demo.wait(timeout=120)
    output = demo.output
    assert code == 0, output[-3000:]
    assert "PostgreSQL (pgserver) postgresql://" in output
    accounted = ACCOUNTED.search(output)
    assert accounted, output[-3000:]
    assert accounted.group(1) == accounted.group(2) == "300"
    _assert_cleaned_up(output)
