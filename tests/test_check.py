"""``metrica-bridge check``: configuration and status-map validation, the comparison with the
counter in Metrica (time zone, order statuses; a real sandbox), dry-run rendering."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from metrica_bridge.cli import app
from metrica_bridge.config import PROJECT_ROOT
from metrica_bridge.kafka.broker import free_port
from metrica_bridge.sandbox import SandboxServer
from tests.support import crm
from tests.support.stack import COUNTER, TOKEN

# The same statuses as the test map the `sandbox` fixture pushes.
MAP = PROJECT_ROOT / "deploy" / "status_map.example.yaml"
WIDE = {"COLUMNS": "1000"}  # table cells unwrapped, so messages can be matched whole


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "METRICA_COUNTER_ID",
        "METRICA_TOKEN",
        "METRICA_TOKEN_FILE",
        "STATUS_MAP_FILE",
        "STORE_URL",
        "METRICA_API_URL",
        "METRICA_TIMEZONE",
        "METRICA_TIMEZONE_OVERRIDE",
        "METRICA_SCHEMA_SYNC_ON_START",
    ):
        monkeypatch.delenv(name, raising=False)


def _check(monkeypatch: pytest.MonkeyPatch, url: str, *args: str, **env: str) -> Result:
    """``metrica-bridge check`` against the Metrica at ``url`` (the sandbox's counter)."""
    monkeypatch.setenv("METRICA_API_URL", url)
    monkeypatch.setenv("METRICA_COUNTER_ID", str(COUNTER))
    monkeypatch.setenv("METRICA_TOKEN", TOKEN)
    monkeypatch.setenv("STATUS_MAP_FILE", str(MAP))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return CliRunner().invoke(app, ["check", *args], env=WIDE)


def test_a_good_configuration_renders_the_examples(
    monkeypatch: pytest.MonkeyPatch, sandbox: SandboxServer
) -> None:
    result = _check(monkeypatch, sandbox.url)
    assert result.exit_code == 0, result.output
    assert "Europe/Moscow (the counter's)" in result.output
    assert "the counter knows every status of the map (5)" in result.output
    assert '"order_status": "won"' in result.output
    assert '"create_date_time"' in result.output
    assert TOKEN not in result.output
    assert "79995551111" not in result.output  # identifiers masked unless asked for
    shown = CliRunner().invoke(app, ["check", "--show-identifiers"], env=WIDE)
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


def test_a_time_zone_other_than_the_counter_s_fails(
    monkeypatch: pytest.MonkeyPatch, sandbox: SandboxServer
) -> None:
    """Issue 15, item 1: the service would refuse to start; check says so, and why."""
    result = _check(monkeypatch, sandbox.url, METRICA_TIMEZONE="Asia/Yekaterinburg")
    assert result.exit_code == 1, result.output
    assert (
        f"METRICA_TIMEZONE=Asia/Yekaterinburg differs from the time zone of counter {COUNTER} "
        "in Metrica (Europe/Moscow)"
    ) in result.output
    assert "set METRICA_TIMEZONE_OVERRIDE=true" in result.output
    assert TOKEN not in result.output

    same = _check(monkeypatch, sandbox.url, METRICA_TIMEZONE="Europe/Moscow")
    assert same.exit_code == 0, same.output
    assert "Europe/Moscow (the counter's, as METRICA_TIMEZONE)" in same.output

    # The explicit override is allowed, with a warning; the examples use the configured zone.
    overridden = _check(
        monkeypatch,
        sandbox.url,
        METRICA_TIMEZONE="Asia/Yekaterinburg",
        METRICA_TIMEZONE_OVERRIDE="true",
    )
    assert overridden.exit_code == 0, overridden.output
    assert "Asia/Yekaterinburg (METRICA_TIMEZONE, overriding the counter's Europe/Moscow)" in (
        overridden.output
    )
    assert "warn" in overridden.output


def test_a_time_zone_that_is_not_one_fails(
    monkeypatch: pytest.MonkeyPatch, sandbox: SandboxServer
) -> None:
    result = _check(monkeypatch, sandbox.url, METRICA_TIMEZONE="Moscow")
    assert result.exit_code == 1, result.output
    assert "METRICA_TIMEZONE 'Moscow' is not an IANA time zone" in result.output
    assert "Traceback" not in result.output


def test_a_status_map_the_counter_does_not_know_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15, item 8: a fresh counter has no custom statuses; until schema-sync pushed the
    map, check fails, naming the statuses and the command; afterwards it passes."""
    with SandboxServer(tokens=[TOKEN], counter_ids=[COUNTER], port=0) as fresh:
        result = _check(monkeypatch, fresh.url)
        assert result.exit_code == 1, result.output
        assert (
            "status map differs from the counter's order statuses "
            "(missing: new, qualified, won, lost, junk): run `metrica-bridge schema-sync`"
        ) in result.output
        assert fresh.orders(COUNTER) == []  # check sends nothing
        crm.push_status_map(fresh.url)
        again = CliRunner().invoke(app, ["check"], env=WIDE)
        assert again.exit_code == 0, again.output


def test_a_status_the_counter_holds_otherwise_fails(
    monkeypatch: pytest.MonkeyPatch, sandbox: SandboxServer, tmp_path: Path
) -> None:
    changed = tmp_path / "map.yaml"
    changed.write_text(MAP.read_text(encoding="utf-8").replace("type: SPAM", "type: CANCELLED"))
    result = _check(monkeypatch, sandbox.url, STATUS_MAP_FILE=str(changed))
    assert result.exit_code == 1, result.output
    assert "(differs: junk (type)): run `metrica-bridge schema-sync`" in result.output


def test_metrica_unreachable_or_refusing_is_reported(
    monkeypatch: pytest.MonkeyPatch, sandbox: SandboxServer
) -> None:
    down = _check(monkeypatch, f"http://127.0.0.1:{free_port()}")
    assert down.exit_code == 1, down.output
    assert "cannot read the counter's time zone" in down.output
    assert "cannot read the counter's order statuses" in down.output
    assert "--offline checks the files only" in down.output
    assert TOKEN not in down.output

    offline = CliRunner().invoke(app, ["check", "--offline"], env=WIDE)
    assert offline.exit_code == 0, offline.output
    assert "not compared with the counter (--offline)" in offline.output

    sandbox.set_faults(reject_token=TOKEN)
    refused = _check(monkeypatch, sandbox.url)
    assert refused.exit_code == 1, refused.output
    assert "invalid_token" in refused.output
    assert TOKEN not in refused.output
