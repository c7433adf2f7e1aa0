from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from metrica_bridge.cli import app
from metrica_bridge.metrica.client import MetricaClient
from metrica_bridge.metrica.schema_sync import diff_statuses, sync_order_statuses
from metrica_bridge.metrica.status_map import load_status_map, parse_status_map
from metrica_bridge.metrics import REGISTRY
from metrica_bridge.sandbox import SandboxServer
from tests.metrica.conftest import COUNTER, TOKEN, ClientFactory
from tests.metrica.test_status_map import DESIGN_MAP


def _posts() -> float:
    value = REGISTRY.get_sample_value(
        "metrica_bridge_metrica_requests_total",
        {"endpoint": "order_statuses_post", "result": "success"},
    )
    return value or 0.0


@pytest.fixture
def map_file(tmp_path: Path) -> Path:
    path = tmp_path / "status-map.yaml"
    path.write_text(DESIGN_MAP, encoding="utf-8")
    return path


async def test_sync_is_idempotent(make_client: ClientFactory, map_file: Path) -> None:
    status_map = load_status_map(map_file)
    async with make_client() as client:
        posts = _posts()
        first = await sync_order_statuses(client, status_map)
        assert first.posted
        assert first.in_sync
        assert {d.state for d in first.before} == {"missing"}
        assert {d.state for d in first.after} == {"ok"}
        second = await sync_order_statuses(client, status_map)
        assert not second.posted
        assert second.in_sync
        assert _posts() == posts + 1


async def test_sync_repairs_a_drifted_status(make_client: ClientFactory, map_file: Path) -> None:
    status_map = load_status_map(map_file)
    async with make_client() as client:
        await client.put_order_statuses(
            [
                {
                    "id": "qualified",
                    "type": "OTHER",
                    "humanized": "Качественный лид",
                    "goal_action_ids": ["old"],
                }
            ]
        )
        report = await sync_order_statuses(client, status_map)
    before = {d.id: d for d in report.before}
    assert before["qualified"].state == "differs"
    assert before["qualified"].fields == ("goal_action_ids",)
    assert report.posted
    assert report.in_sync


async def test_dry_run_sends_nothing(make_client: ClientFactory, map_file: Path) -> None:
    async with make_client() as client:
        report = await sync_order_statuses(client, load_status_map(map_file), dry_run=True)
        assert not report.posted
        assert not report.in_sync
        assert await client.get_order_statuses() == []


def test_extra_statuses_are_reported_not_mismatches() -> None:
    status_map = parse_status_map(
        {"initial_status": "a", "paid_status": "a", "statuses": {"a": {"id": "a", "type": "PAID"}}}
    )
    current = [
        {"id": "a", "type": "PAID", "goal_action_ids": [], "order_status_source": "USER"},
        {"id": "legacy", "type": "OTHER"},
    ]
    diffs = {d.id: d for d in diff_statuses(status_map.metrica_statuses(), current)}
    assert diffs["a"].state == "ok"
    assert diffs["legacy"].state == "extra"
    assert not diffs["legacy"].is_mismatch


async def test_mismatch_after_push_is_reported(map_file: Path) -> None:
    """A Metrica that accepts the POST but keeps no goals: the read-back must not pass."""
    stored: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            for status in json.loads(request.content)["order_statuses"]:
                stored.append({**status, "goal_action_ids": []})
            return httpx.Response(200, json={"success": True})
        return httpx.Response(200, json={"order_statuses": stored})

    client = MetricaClient(
        api_url="http://metrica.invalid",
        counter_id=COUNTER,
        token=SecretStr(TOKEN),
        transport=httpx.MockTransport(handler),
    )
    async with client:
        report = await sync_order_statuses(client, load_status_map(map_file))
    assert report.posted
    assert not report.in_sync
    assert [d.id for d in report.after if d.is_mismatch] == ["qualified"]


def _env(sandbox: SandboxServer, **extra: str) -> dict[str, str]:
    return {
        "METRICA_API_URL": sandbox.url,
        "METRICA_COUNTER_ID": str(COUNTER),
        "METRICA_TOKEN": TOKEN,
        "LOG_FORMAT": "console",
        **extra,
    }


def test_cli_twice_then_in_sync(sandbox: SandboxServer, map_file: Path) -> None:
    runner = CliRunner()
    env = _env(sandbox, STATUS_MAP_FILE=str(map_file))
    first = runner.invoke(app, ["schema-sync"], env=env)
    assert first.exit_code == 0, first.output
    assert "read-back matches" in first.output
    posts = _posts()
    second = runner.invoke(app, ["schema-sync"], env=env)
    assert second.exit_code == 0, second.output
    assert "already in sync" in second.output
    assert _posts() == posts
    assert TOKEN not in first.output + second.output


def test_cli_dry_run_and_flag(sandbox: SandboxServer, map_file: Path) -> None:
    result = CliRunner().invoke(
        app, ["schema-sync", "--status-map", str(map_file), "--dry-run"], env=_env(sandbox)
    )
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output
    assert "missing" in result.output


def test_cli_invalid_map_exits_non_zero(sandbox: SandboxServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "initial_status: a\npaid_status: a\nstatuses:\n  a: {id: 'a b', type: PAID}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["schema-sync", "--status-map", str(bad)], env=_env(sandbox))
    assert result.exit_code == 2
    assert "statuses.a.id" in result.output


def test_cli_rejected_token_exits_non_zero(sandbox: SandboxServer, map_file: Path) -> None:
    sandbox.set_faults(reject_token=TOKEN)
    result = CliRunner().invoke(
        app, ["schema-sync", "--status-map", str(map_file)], env=_env(sandbox)
    )
    assert result.exit_code == 3
    assert "SetupError" in result.output
    assert TOKEN not in result.output
