"""Every command line the manifests and compose run parses with the real ``metrica-bridge``
CLI (names, options and their types), after the kubelet's ``$(VAR)`` expansion."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer

from metrica_bridge.cli import app
from tests.deploy.deploy_support import bridge_services, k8s_env, k8s_kind


def _k8s_invocations() -> dict[str, list[str]]:
    env = k8s_env()
    out: dict[str, list[str]] = {}
    for doc in k8s_kind("Deployment") + k8s_kind("Job"):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
            out[f"k8s/{doc['metadata']['name']}"] = args
    return out


def _invocations() -> dict[str, list[str]]:
    out = _k8s_invocations()
    for name, svc in bridge_services().items():
        out[f"compose/{name}"] = [str(a) for a in svc["command"]]
    return out


INVOCATIONS = _invocations()


def _commands() -> dict[str, Any]:
    commands: dict[str, Any] = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    return commands


@pytest.mark.parametrize("where", sorted(INVOCATIONS))
def test_command_line_parses(where: str) -> None:
    args = INVOCATIONS[where]
    command = _commands().get(args[0])
    assert command is not None, f"{where}: no such command {args[0]!r}"
    # make_context parses and type-checks every option without running the command.
    context: Any = command.make_context(args[0], list(args[1:]))
    context.close()


def test_parse_check_can_fail() -> None:
    # typer may vendor its own click, so match the messages rather than click's classes.
    with pytest.raises(Exception, match="valid integer"):
        _commands()["sandbox"].make_context("sandbox", ["--counter-id", "not-a-number"])
    with pytest.raises(Exception, match="No such option"):
        _commands()["run"].make_context("run", ["--topik", "lead-created"])


def test_k8s_runs_each_topic_once() -> None:
    topics = sorted(args[2] for args in _k8s_invocations().values() if args[0] == "run")
    assert topics == sorted(["lead-created", "deal-status-changed", "payment-received"])
