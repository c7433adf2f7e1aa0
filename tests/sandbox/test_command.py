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
import pytest
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
    for option in (
        "--host", "--port", "--token", "--counter-id", "--timezone", "--state",
        "--requests-per-day", "--quota-day-s",
    ):  # fmt: skip
        assert option in result.output


@pytest.mark.parametrize(
    ("option", "value"),
    [("--requests-per-day", "0"), ("--quota-day-s", "0"), ("--quota-day-s", "-86400")],
)
def test_quota_options_below_one_are_refused(option: str, value: str) -> None:
    result = CliRunner().invoke(app, ["sandbox", option, value], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert f"Invalid value for {option}" in result.output


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
        "--requests-per-day", "3", "--quota-day-s", "3600",
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
        faults = httpx.get(f"{base}/_sandbox/faults").json()
        assert (faults["requests_per_day"], faults["quota_day_s"]) == (3, 3600)
        # Two requests admitted so far (the 401 spends nothing): one left in this hour.
        hour = int(time.time() // 3600)
        last = [
            httpx.get(f"{base}/cdp/api/v1/counter/7/last_uploadings", headers=headers)
            for _ in range(2)
        ]
        if int(time.time() // 3600) == hour:
            assert [r.status_code for r in last] == [200, 429]
            assert last[1].json()["errors"][0]["error_type"] == "quota_requests_by_uid"
            assert last[1].json()["message"].endswith(":00:00Z)")
        httpx.post(f"{base}/_sandbox/faults", json={"requests_per_day": 100}).raise_for_status()
        httpx.post(f"{base}/_sandbox/reset").raise_for_status()
        assert httpx.get(f"{base}/_sandbox/faults").json()["requests_per_day"] == 3
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    text = log.read_text()
    assert "/cdp/api/v1/counter/7/data/contacts/json" in text  # requests are logged...
    assert SECRET not in text  # ...without the token
    assert "79995551111" not in text
