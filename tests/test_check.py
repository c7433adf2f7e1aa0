"""``metrica-bridge check``: configuration and status-map validation, dry-run rendering."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from metrica_bridge.cli import app
from metrica_bridge.config import PROJECT_ROOT

MAP = PROJECT_ROOT / "deploy" / "status_map.example.yaml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "METRICA_COUNTER_ID",
        "METRICA_TOKEN",
        "METRICA_TOKEN_FILE",
        "STATUS_MAP_FILE",
        "STORE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def test_a_good_configuration_renders_the_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICA_COUNTER_ID", "42")
    monkeypatch.setenv("METRICA_TOKEN", "secret-token-value")
    monkeypatch.setenv("STATUS_MAP_FILE", str(MAP))
    result = CliRunner().invoke(app, ["check"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert '"order_status": "won"' in result.output
    assert '"create_date_time"' in result.output
    assert "secret-token-value" not in result.output
    assert "79995551111" not in result.output  # identifiers masked unless asked for
    shown = CliRunner().invoke(app, ["check", "--show-identifiers"], env={"COLUMNS": "200"})
    assert "79995551111" in shown.output


def test_missing_token_and_a_broken_status_map_fail(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broken = tmp_path / "map.yaml"
    broken.write_text(
        "initial_status: new\npaid_status: won\nstatuses:\n  new: {id: 'bad id!', type: NOPE}\n"
    )
    monkeypatch.setenv("METRICA_COUNTER_ID", "42")
    monkeypatch.setenv("STATUS_MAP_FILE", str(broken))
    result = CliRunner().invoke(app, ["check"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "METRICA_TOKEN" in result.output
    assert "statuses.new" in result.output


def test_an_unknown_phone_region_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICA_COUNTER_ID", "42")
    monkeypatch.setenv("METRICA_TOKEN", "secret-token-value")
    monkeypatch.setenv("PHONE_DEFAULT_REGION", "Russia")
    result = CliRunner().invoke(app, ["check"], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "not a region code" in result.output
