"""The Dockerfile: multi-stage python:3.11-slim, non-root, schemas inside, a HEALTHCHECK that
really probes /healthz; and a .dockerignore that keeps secrets and local state out."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from metrica_bridge.health import HealthServer
from tests.deploy.deploy_support import DEPLOY, ROOT

DOCKERFILE = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
# Joined continuation lines, comments dropped: one instruction per line.
INSTRUCTIONS = [
    line.strip()
    for line in DOCKERFILE.replace("\\\n", " ").splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def _runtime() -> list[str]:
    starts = [i for i, line in enumerate(INSTRUCTIONS) if line.startswith("FROM ")]
    return INSTRUCTIONS[starts[-1] :]


def _one(stage: list[str], keyword: str) -> str:
    found = [line for line in stage if line.startswith(keyword + " ")]
    assert len(found) == 1, f"{keyword}: {found}"
    return found[0][len(keyword) + 1 :].strip()


def test_multi_stage_python_311_slim() -> None:
    froms = [line for line in INSTRUCTIONS if line.startswith("FROM ")]
    assert len(froms) >= 2
    (image,) = [line for line in INSTRUCTIONS if line.startswith("ARG PYTHON_IMAGE=")]
    # The Debian release is in the tag (python:3.11-slim moves between releases by itself);
    # the digest is pinned at build time (docs/decisions.md, issue 16 item 17).
    assert image.split("@")[0] == "ARG PYTHON_IMAGE=python:3.11-slim-bookworm"
    assert "--build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:" in DOCKERFILE
    assert all(line.startswith("FROM ${PYTHON_IMAGE}") for line in froms)
    runtime = _runtime()
    assert any(line.startswith("COPY --from=build /opt/venv") for line in runtime)
    assert "pip wheel" in DOCKERFILE


def test_runs_as_non_root() -> None:
    user = _one(_runtime(), "USER")
    name = user.split(":")[0]
    assert name not in {"root", "0"}
    assert int(name) >= 1000
    # USER comes after every RUN of the runtime stage, so nothing after it runs as root.
    runtime = _runtime()
    last_run = max(i for i, line in enumerate(runtime) if line.startswith("RUN "))
    assert runtime.index("USER " + user) > last_run


def test_entrypoint_and_schemas() -> None:
    runtime = _runtime()
    assert json.loads(_one(runtime, "ENTRYPOINT")) == ["metrica-bridge"]
    copy = [line for line in runtime if line.startswith("COPY schemas ")]
    assert len(copy) == 1
    destination = copy[0].split()[-1]
    assert f"SCHEMAS_DIR={destination}" in _one(runtime, "ENV")
    assert "METRICS_PORT=9108" in _one(runtime, "ENV")
    assert _one(runtime, "EXPOSE") == "9108"
    assert (ROOT / "schemas").is_dir()


def _healthcheck_command() -> list[str]:
    line = _one(_runtime(), "HEALTHCHECK")
    assert "--interval=" in line
    assert "--timeout=" in line
    command: list[str] = json.loads(line.split(" CMD ", 1)[1])
    return command


def test_healthcheck_needs_no_curl() -> None:
    command = _healthcheck_command()
    assert command[0] == "python"
    assert "/healthz" in command[-1]
    assert not any(tool in line for line in INSTRUCTIONS for tool in ("curl ", "wget "))


class _Checks:
    """Switchable answers for the service's real HealthServer."""

    def __init__(self) -> None:
        self.alive = True
        self.ready = False

    def check_alive(self) -> tuple[bool, str]:
        return self.alive, "alive" if self.alive else "wedged"

    def check_ready(self) -> tuple[bool, str]:
        return self.ready, "ready" if self.ready else "no partitions assigned"


@pytest.fixture
def health() -> Iterator[tuple[HealthServer, _Checks]]:
    checks = _Checks()
    server = HealthServer(0, checks.check_alive, checks.check_ready, host="127.0.0.1").start()
    yield server, checks
    server.stop()


def _run_healthcheck(port: int) -> int:
    command = _healthcheck_command()
    command[0] = sys.executable
    env = {**os.environ, "METRICS_PORT": str(port)}
    return subprocess.run(command, env=env, capture_output=True, timeout=30, check=False).returncode


def test_healthcheck_follows_the_services_healthz(health: tuple[HealthServer, _Checks]) -> None:
    server, checks = health
    # Alive but not ready (no partitions yet): the container is healthy, k8s just not ready.
    assert _run_healthcheck(server.port) == 0
    checks.alive = False
    assert _run_healthcheck(server.port) != 0
    server.stop()
    assert _run_healthcheck(server.port) != 0  # nothing listening


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_probe_paths_answer_on_the_service(health: tuple[HealthServer, _Checks]) -> None:
    server, checks = health
    assert _get(server.port, "/healthz") == 200
    assert _get(server.port, "/readyz") == 503
    checks.ready = True
    assert _get(server.port, "/readyz") == 200
    assert _get(server.port, "/metrics") == 200


def _ignored(path: str, patterns: list[str]) -> bool:
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if (
            fnmatch.fnmatch(path, pattern)
            or fnmatch.fnmatch(path, pattern.removeprefix("**/"))
            or path.startswith(pattern + "/")
        ):
            result = not negate
    return result


def test_dockerignore_keeps_state_out_and_sources_in() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (".git", ".venv", "metrica-bridge.db", "deploy/compose/metrica-token.txt", ".env"):
        assert _ignored(path, patterns), path
    sources = [
        source
        for line in INSTRUCTIONS
        if line.startswith("COPY ") and "--from" not in line
        for source in line.split()[1:-1]
    ]
    assert {"pyproject.toml", "README.md", "services", "schemas"} <= set(sources)
    for source in sources:
        assert not _ignored(source.rstrip("/"), patterns), source
