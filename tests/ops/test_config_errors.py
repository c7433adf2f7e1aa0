"""Configuration errors (issue 16, items 14 and 15): a failing command names the variable and
the problem in one line, never a value of a secret variable, never a traceback; secret
variables may be given as ``<NAME>_FILE``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metrica_bridge import config
from metrica_bridge.cli import app
from metrica_bridge.config import ConfigError, load_settings

# Planted in every secret-like variable; none may appear in any output.
SECRETS = {
    "METRICA_TOKEN": "y0_PLANTED-metrica-token-8c1f",
    "KAFKA_SASL_PASSWORD": "PLANTED-sasl-password-1b2c",
    "KAFKA_SSL_KEY_PASSWORD": "PLANTED-ssl-key-password-3d4e",
    "KAFKA_SSL_KEYSTORE_PASSWORD": "PLANTED-keystore-password-5f6a",
    "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET": "PLANTED-oauth-client-secret-7b8c",
    "STORE_URL": "postgresql://bridge:PLANTED-pg-password-9d0e@127.0.0.1:1/bridge",
    "SCHEMA_REGISTRY_URL": "http://registry-user:PLANTED-registry-password-a1b2@127.0.0.1:1",
}
PLANTED = ["PLANTED", "8c1f", "1b2c", "3d4e", "5f6a", "7b8c", "9d0e", "a1b2"]

# Several kinds of bad configuration, each a variable and the text the error must hold.
BAD = {
    "missing token file": ({"METRICA_TOKEN_FILE": "/nonexistent/token"}, "METRICA_TOKEN_FILE"),
    "bad number": ({"METRICA_DAILY_BUDGET": "lots"}, "METRICA_DAILY_BUDGET"),
    "number out of range": ({"BATCH_MAX_RECORDS": "0"}, "BATCH_MAX_RECORDS"),
    "unknown region": ({"PHONE_DEFAULT_REGION": "XX"}, "PHONE_DEFAULT_REGION"),
    "bad log format": ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    "missing password file": (
        {"KAFKA_SSL_KEY_PASSWORD_FILE": "/nonexistent/pw"},
        "KAFKA_SSL_KEY_PASSWORD_FILE",
    ),
}
COMMANDS = {
    "run": ["run"],
    "check": ["check", "--offline"],
    "replay": ["replay", "--dlq", "lead-created.dlq", "--dry-run"],
    "schema-sync": ["schema-sync", "--dry-run"],
}


def _env(bad: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {
        "METRICA_COUNTER_ID": "12345",
        "METRICA_API_URL": "http://127.0.0.1:1",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "METRICS_HOST": "127.0.0.1",
        "METRICS_PORT": "0",
        **SECRETS,
        **bad,
    }
    if "METRICA_TOKEN_FILE" in bad:
        env.pop("METRICA_TOKEN")  # the variable would win over the file
    if "KAFKA_SSL_KEY_PASSWORD_FILE" in bad:
        env.pop("KAFKA_SSL_KEY_PASSWORD")
    return env


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("METRICA_", "KAFKA_", "STORE_", "SCHEMA_", "STATUS_", "TOPIC_")):
            monkeypatch.delenv(name, raising=False)


def _assert_clean(output: str) -> None:
    for planted in PLANTED:
        assert planted not in output, output
    assert "Traceback" not in output, output
    assert "input_value" not in output, output


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", BAD)
def test_a_failing_command_names_the_variable_and_prints_no_secret(
    command: str, case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad, variable = BAD[case]
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, COMMANDS[command], env={**_env(bad, tmp_path), "COLUMNS": "1000"}
    )
    assert result.exit_code != 0, result.output
    assert variable in result.output, result.output
    _assert_clean(result.output)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{command}: {type(result.exception).__name__} escaped")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"METRICA_TIMEZONE": "Not/AZone"}, "METRICA_TIMEZONE"),
        ({"STATUS_MAP_FILE": "BAD_MAP"}, "STATUS_MAP_FILE"),
        ({"METRICA_TOKEN": ""}, "METRICA_TOKEN"),
    ],
)
@pytest.mark.parametrize("command", ["run", "check"])
def test_settings_checked_after_loading_print_no_secret_either(
    command: str,
    env: dict[str, str],
    variable: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    bad_map = tmp_path / "status_map.yaml"
    bad_map.write_text("statuses:\n  new: {id: 'no spaces allowed', type: WHATEVER}\n")
    env = {k: str(bad_map) if v == "BAD_MAP" else v for k, v in env.items()}
    full = {**_env({}, tmp_path), **env, "COLUMNS": "1000"}
    result = CliRunner().invoke(app, COMMANDS[command], env=full)
    assert result.exit_code != 0, result.output
    # check's table names the status map by its row (and the file by its path).
    named = "status map" if (command, variable) == ("check", "STATUS_MAP_FILE") else variable
    assert named in result.output, result.output
    _assert_clean(result.output)


def _bare_env(tmp_path: Path) -> dict[str, str]:
    """Nothing configured: no METRICA_*, KAFKA_*, … of the test runner's environment."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _run(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``metrica-bridge run`` in a process of its own, expected to exit 1; its non-blank lines."""
    done = subprocess.run(
        [sys.executable, "-m", "metrica_bridge.cli", "run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    output = done.stdout + done.stderr
    return output, [line for line in output.splitlines() if line.strip()]


def test_run_with_nothing_configured_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """Not 118 lines of traceback ending in a broker transport failure."""
    env = _bare_env(tmp_path)
    _, lines = _run(env, tmp_path)
    assert lines == ["configuration error: METRICA_COUNTER_ID is not set"], lines


def test_a_bad_status_map_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    status_map = tmp_path / "map.yaml"
    status_map.write_text("statuses: [1, 2]\n")
    env = {
        **_bare_env(tmp_path),
        **SECRETS,
        "STORE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "METRICA_COUNTER_ID": "1",
        "STATUS_MAP_FILE": str(status_map),
        "METRICS_PORT": "0",
    }
    output, lines = _run(env, tmp_path)
    assert len(lines) == 1, lines
    assert lines[0].startswith("configuration error: STATUS_MAP_FILE: "), lines
    _assert_clean(output)


def test_validation_errors_never_quote_the_input() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(
            environ={
                **SECRETS,
                "METRICA_TOKEN_FILE": "/nonexistent",
                "METRICA_DAILY_BUDGET": "x",
                "LOG_FORMAT": "xml",
            }
        )
    message = str(raised.value)
    assert "METRICA_DAILY_BUDGET: Input should be a valid integer" in message
    assert "LOG_FORMAT: Input should be 'json' or 'console'" in message
    for planted in PLANTED:
        assert planted not in message
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


def test_secret_variables() -> None:
    for name in SECRETS:
        assert config.is_secret_variable(name), name
    for name in ("KAFKA_SASL_JAAS_CONFIG", "KAFKA_SSL_KEY_PEM", "kafka_sasl_password"):
        assert config.is_secret_variable(name), name
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SASL_USERNAME", "METRICA_COUNTER_ID"):
        assert not config.is_secret_variable(name), name


def test_secret_variables_can_be_files(tmp_path: Path) -> None:
    (tmp_path / "store-url").write_text("postgresql://u:PLANTED-pw-from-file@db:5432/x\n")
    (tmp_path / "kafka-password").write_text("PLANTED-sasl-from-file\n")
    (tmp_path / "registry").write_text("http://u:PLANTED-reg@registry:8081\n")
    settings = load_settings(
        environ={
            "STORE_URL_FILE": str(tmp_path / "store-url"),
            "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "kafka-password"),
            "SCHEMA_REGISTRY_URL_FILE": str(tmp_path / "registry"),
        }
    )
    assert settings.store_url == "postgresql://u:PLANTED-pw-from-file@db:5432/x"
    assert settings.kafka_properties == {"sasl.password": "PLANTED-sasl-from-file"}
    assert settings.schema_registry_url == "http://u:PLANTED-reg@registry:8081"
    # Never a librdkafka property "sasl.password.file".
    assert "sasl.password.file" not in settings.kafka_common()
    # The variable itself wins, as METRICA_TOKEN does over METRICA_TOKEN_FILE.
    both = load_settings(
        environ={"STORE_URL": "sqlite:///x.db", "STORE_URL_FILE": str(tmp_path / "store-url")}
    )
    assert both.store_url == "sqlite:///x.db"
    with pytest.raises(ConfigError, match=r"^STORE_URL_FILE cannot be read: "):
        load_settings(environ={"STORE_URL_FILE": str(tmp_path / "absent")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"^KAFKA_SASL_PASSWORD_FILE names an empty file$"):
        load_settings(environ={"KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "empty")})


def test_secrets_read_from_anywhere_are_masked_in_logs(tmp_path: Path) -> None:
    from metrica_bridge.logs import redact

    (tmp_path / "pw").write_text("PLANTED-masked-password\n")
    load_settings(
        environ={
            "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "pw"),
            "STORE_URL": "postgresql://u:PLANTED-masked-db@db/x",
        }
    )
    line = redact("auth failed for PLANTED-masked-password; password PLANTED-masked-db")
    assert "PLANTED" not in line, line
