"""Every environment variable the manifests, compose and the Dockerfile set is one the service
reads, DESIGN names are spelled exactly, and the values load into a valid ``Settings``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException

from metrica_bridge.config import librdkafka_overrides, load_settings
from tests.deploy.deploy_support import (
    DEPLOY,
    DESIGN_ENV,
    DESIGN_MD,
    bridge_services,
    is_known_env,
    k8s_env,
    k8s_kind,
)


def _container_env(doc: dict[str, Any]) -> dict[str, str]:
    spec = doc["spec"]["template"]["spec"]
    out: dict[str, str] = {}
    for container in spec["containers"]:
        for item in container.get("env", []):
            out[item["name"]] = str(item.get("value", "<from secret>"))
    return out


def _dockerfile_env() -> dict[str, str]:
    """ENV of the runtime stage (the build stage's pip settings never reach the service)."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    runtime = text.rsplit("\nFROM ", 1)[1]
    out: dict[str, str] = {}
    for line in runtime.splitlines():
        if line.startswith("ENV "):
            out.update(dict(re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", line)))
    return out


def _sources() -> dict[str, dict[str, str]]:
    sources = {"k8s/config.env": k8s_env(), "Dockerfile": _dockerfile_env()}
    for doc in k8s_kind("Deployment") + k8s_kind("Job"):
        sources[f"k8s/{doc['metadata']['name']}"] = _container_env(doc)
    for name, svc in bridge_services().items():
        sources[f"compose/{name}"] = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
    return sources


# The image's own PATH etc. are not ours to validate.
_RUNTIME = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}


@pytest.mark.parametrize("source", sorted(_sources()))
def test_every_variable_is_known(source: str) -> None:
    unknown = sorted(n for n in _sources()[source] if n not in _RUNTIME and not is_known_env(n))
    assert not unknown, f"{source} sets variables the service never reads: {unknown}"


def test_is_known_env_rejects_misspellings() -> None:
    for wrong in ("METRICA_TOKEN_PATH", "METRICS_PORT_NUMBER", "TOPIC_LEADS_CREATED", "STORE_URI"):
        assert not is_known_env(wrong)


def test_design_names_are_spelled_as_design_md() -> None:
    if not DESIGN_MD.is_file():
        pytest.skip(f"{DESIGN_MD} not present (shared/ is beside the repo in CI and development)")
    section = DESIGN_MD.read_text(encoding="utf-8").split("## 6.", 1)[1].split("\n## ", 1)[0]
    in_design = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", section))
    assert set(DESIGN_ENV) <= in_design, set(DESIGN_ENV) - in_design


def test_every_source_sets_design_names_consistently() -> None:
    k8s = k8s_env()
    for name in (
        "KAFKA_BOOTSTRAP_SERVERS",
        "METRICA_COUNTER_ID",
        "METRICA_TOKEN_FILE",
        "STATUS_MAP_FILE",
        "METRICS_PORT",
        "CONSUMER_GROUP_PREFIX",
        "LOG_FORMAT",
    ):
        assert name in k8s, name
    for name, svc in bridge_services().items():
        if name == "sandbox":
            continue
        env = svc["environment"]
        assert "METRICA_TOKEN" not in env, "compose passes the token as a file, not a variable"
        assert env["STORE_URL"].startswith("postgresql://"), name


def _kafka_properties() -> dict[str, str]:
    props: dict[str, str] = {}
    for env in _sources().values():
        props.update(
            {k: ("x" if v == "<from secret>" else v) for k, v in librdkafka_overrides(env).items()}
        )
    return props


def test_kafka_variables_are_librdkafka_properties() -> None:
    props = _kafka_properties()
    assert "security.protocol" in props
    assert "sasl.username" in props  # the password is a file: KAFKA_SASL_PASSWORD_FILE
    # librdkafka itself rejects unknown property names at construction time.
    consumer = Consumer({"bootstrap.servers": "127.0.0.1:9", "group.id": "deploy-test", **props})
    consumer.close()


def test_librdkafka_rejects_an_unknown_property() -> None:
    with pytest.raises(KafkaException):
        Consumer({"bootstrap.servers": "127.0.0.1:9", "group.id": "x", "no.such.property": "1"})


_FILE_VALUES = {"METRICA_TOKEN_FILE": "test-token", "STORE_URL_FILE": "postgresql://u:p@db:5432/x"}


def _settings_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The deploy file's variables, each ``<SECRET>_FILE`` pointing at a file of this test."""
    out = {k: v for k, v in env.items() if v != "<from secret>"}
    out.setdefault("METRICA_TOKEN_FILE", "/var/run/secrets/token")
    for name in [n for n in out if n.endswith("_FILE") and n != "STATUS_MAP_FILE"]:
        path = tmp_path / name.lower()
        path.write_text(_FILE_VALUES.get(name, "secret") + "\n", encoding="utf-8")
        out[name] = str(path)
    if "STORE_URL_FILE" not in out:
        out.setdefault("STORE_URL", "postgresql://u:p@db:5432/x")
    return out


def test_k8s_configuration_loads(tmp_path: Path) -> None:
    env = {**k8s_env(), **_container_env(k8s_kind("Deployment")[0])}
    settings = load_settings(environ=_settings_env(env, tmp_path))
    assert settings.metrics_port == int(env["METRICS_PORT"])
    assert settings.metrica_counter_id is not None
    assert settings.metrica_token is not None
    assert settings.metrica_token.get_secret_value() == "test-token"
    assert settings.kafka_properties["security.protocol"] == env["KAFKA_SECURITY_PROTOCOL"]


@pytest.mark.parametrize("service", sorted(set(bridge_services()) - {"sandbox"}))
def test_compose_configuration_loads(service: str, tmp_path: Path) -> None:
    env = {k: str(v) for k, v in bridge_services()[service]["environment"].items()}
    settings = load_settings(environ=_settings_env(env, tmp_path))
    assert settings.store_url.startswith("postgresql://")
    assert settings.kafka_bootstrap_servers == env["KAFKA_BOOTSTRAP_SERVERS"]


def test_metrica_parallel_cap_holds_at_minimum_scale(tmp_path: Path) -> None:
    """3 parallel requests per token across ALL processes (metrica-api.md §12)."""
    k8s = load_settings(environ=_settings_env(k8s_env(), tmp_path))
    processes = sum(d["spec"]["minReplicaCount"] for d in k8s_kind("ScaledObject"))
    assert processes * k8s.metrica_max_parallel <= 3
    consumers = [n for n, s in bridge_services().items() if s.get("command", [""])[0] == "run"]
    parallel = {int(bridge_services()[n]["environment"]["METRICA_MAX_PARALLEL"]) for n in consumers}
    assert len(consumers) * max(parallel) <= 3


# `KEY=value`, `KEY: value` and `- name: KEY`: anything that would set the variable.
_SETS_TIMEZONE = re.compile(r"\bMETRICA_TIMEZONE\s*[=:]|name:\s*[\"']?METRICA_TIMEZONE\b")


def test_no_deploy_file_overrides_the_counter_time_zone() -> None:
    """The counter's zone is read from Metrica; a METRICA_TIMEZONE that differs from it would
    shift every create_date_time / update_date_time for good (DESIGN.md §3)."""
    for source, env in _sources().items():
        assert "METRICA_TIMEZONE" not in env, source
    for path in sorted(DEPLOY.rglob("*")):
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        assert not _SETS_TIMEZONE.search(text), path.relative_to(DEPLOY)


_SETS_OVERRIDE = re.compile(
    r"\bMETRICA_TIMEZONE_OVERRIDE\s*[=:]|name:\s*[\"']?METRICA_TIMEZONE_OVERRIDE\b"
)


def test_no_deploy_file_allows_a_time_zone_other_than_the_counter_s() -> None:
    """METRICA_TIMEZONE_OVERRIDE lets a zone that differs from the counter's through (issue 15,
    item 1): a decision for one operator to make by hand, never a default of the deploy files.
    Comments may name it."""
    for source, env in _sources().items():
        assert "METRICA_TIMEZONE_OVERRIDE" not in env, source
    for path in sorted(DEPLOY.rglob("*")):
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in code if _SETS_OVERRIDE.search(line)], path


def test_the_timezone_check_can_fail() -> None:
    for line in (
        "METRICA_TIMEZONE=Europe/Moscow",
        "  METRICA_TIMEZONE: UTC",
        "- name: METRICA_TIMEZONE",
    ):
        assert _SETS_TIMEZONE.search(line), line
    assert not _SETS_TIMEZONE.search("# METRICA_TIMEZONE is deliberately not set")
    for line in ("METRICA_TIMEZONE_OVERRIDE=true", '  METRICA_TIMEZONE_OVERRIDE: "true"'):
        assert _SETS_OVERRIDE.search(line), line


def _sandbox_quota_day_s() -> int:
    command = [str(x) for x in bridge_services()["sandbox"]["command"]]
    if "--quota-day-s" in command:
        return int(command[command.index("--quota-day-s") + 1])
    return 86_400  # the sandbox's default (DESIGN.md §6)


def test_quota_days_and_reserve_fit_the_metrica_they_talk_to(tmp_path: Path) -> None:
    """Production quota days are Metrica's (reset 00:00 GMT); compose's are the sandbox's. The
    reserve that retries, reconciliation, schema-sync and probes live on is never 0."""
    k8s = load_settings(environ=_settings_env(k8s_env(), tmp_path))
    assert k8s.metrica_quota_day_s == 86_400
    assert k8s.metrica_budget_reserve > 0
    for name, svc in bridge_services().items():
        if name == "sandbox":
            continue
        env = {k: str(v) for k, v in svc["environment"].items()}
        settings = load_settings(environ=_settings_env(env, tmp_path))
        assert settings.metrica_quota_day_s == _sandbox_quota_day_s(), name
        assert settings.metrica_budget_reserve > 0, name
