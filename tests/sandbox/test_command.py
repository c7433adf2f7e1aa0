"""``metrica-bridge sandbox`` as an operator runs it: a real process on a real port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from metrica_bridge.cli import app

SECRET = "y0_cli-secret-token-5d1e"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_help_lists_the_documented_options() -> None:
    result = CliRunner().invoke(app, ["sandbox", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--host", "--port", "--token", "--counter-id", "--timezone", "--state"):
        assert option in result.output


def test_unknown_time_zone_is_refused() -> None:
    result = CliRunner().invoke(app, ["sandbox", "--timezone", "Mars/Olympus"])
    assert result.exit_code != 0


def test_serves_counters_and_never_logs_the_token(tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "sandbox.log"
    command = [
        sys.executable, "-m", "metrica_bridge.cli", "sandbox", "--port", str(port),
        "--token", SECRET, "--token", "other", "--counter-id", "7", "--counter-id", "8",
        "--timezone", "Asia/Yekaterinburg", "--state", str(tmp_path / "state.db"),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy()
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{base}/_sandbox/health")
                break
            except httpx.TransportError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the sandbox did not start"
                time.sleep(0.1)
        headers = {"Authorization": f"OAuth {SECRET}"}
        counter = httpx.get(f"{base}/management/v1/counter/8", headers=headers).json()["counter"]
        assert (counter["time_zone_name"], counter["time_zone_offset"]) == (
            "Asia/Yekaterinburg",
            300,
        )
        upload = httpx.post(
            f"{base}/cdp/api/v1/counter/7/data/contacts/json?merge_mode=SAVE",
            json={"contacts": [{"uniq_id": "a", "phones": ["79995551111"]}]},
            headers=headers,
        )
        assert upload.status_code == 200
        bearer = httpx.get(
            f"{base}/cdp/api/v1/counter/7/last_uploadings",
            headers={"Authorization": f"Bearer {SECRET}"},
        )
        assert bearer.status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    text = log.read_text()
    assert "/cdp/api/v1/counter/7/data/contacts/json" in text  # requests are logged...
    assert SECRET not in text  # ...without the token
    assert "79995551111" not in text
