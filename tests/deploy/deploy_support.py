"""Shared readers for the deploy tests: the files under ``deploy/``, the known configuration
names, and the metric names/labels that ``metrica_bridge.metrics`` really exports."""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from metrica_bridge import metrics
from metrica_bridge.config import Settings, is_secret_variable

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DESIGN_MD = ROOT.parent / "shared" / "DESIGN.md"

# DESIGN.md §6, spelled exactly as the contract spells them.
DESIGN_ENV = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "SCHEMA_REGISTRY_URL",
    "METRICA_API_URL",
    "METRICA_COUNTER_ID",
    "METRICA_TOKEN",
    "METRICA_TOKEN_FILE",
    "METRICA_TIMEZONE",
    "STORE_URL",
    "STATUS_MAP_FILE",
    "METRICS_PORT",
    "TOPIC_LEAD_CREATED",
    "TOPIC_DEAL_STATUS_CHANGED",
    "TOPIC_PAYMENT_RECEIVED",
    "CONSUMER_GROUP_PREFIX",
    "LOG_LEVEL",
    "LOG_FORMAT",
)
# Read by config.load_settings itself rather than a Settings field.
LOADER_ENV = ("METRICA_BRIDGE_CONFIG",)
KAFKA_PROPERTY = re.compile(r"^KAFKA_[A-Z0-9_]+$")
# Labels Prometheus or the scrape config add to every series of a target.
TARGET_LABELS = frozenset(
    {"job", "instance", "namespace", "pod", "container", "service", "endpoint", "component"}
)
TOPICS = ("lead-created", "deal-status-changed", "payment-received")
TOPIC_ENV = {
    "lead-created": "TOPIC_LEAD_CREATED",
    "deal-status-changed": "TOPIC_DEAL_STATUS_CHANGED",
    "payment-received": "TOPIC_PAYMENT_RECEIVED",
}
SETTINGS_ENV = frozenset(
    name.upper() for name in Settings.model_fields if name != "kafka_properties"
)


def is_known_env(name: str) -> bool:
    if name.endswith("_FILE") and is_secret_variable(name.removesuffix("_FILE")):
        return True  # a secret given as a file (config.load_settings)
    return (
        name in DESIGN_ENV
        or name in LOADER_ENV
        or name in SETTINGS_ENV
        or bool(KAFKA_PROPERTY.match(name))
    )


def yaml_files() -> list[Path]:
    return sorted(p for ext in ("*.yml", "*.yaml") for p in DEPLOY.rglob(ext))


def json_files() -> list[Path]:
    return sorted(DEPLOY.rglob("*.json"))


@cache
def _parsed(path: Path) -> list[Any]:
    return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))


def load_yaml(path: Path) -> Any:
    (doc,) = _parsed(path)
    return copy.deepcopy(doc)  # parsed once per run; callers get their own copy


def load_all(path: Path) -> list[dict[str, Any]]:
    return [copy.deepcopy(d) for d in _parsed(path) if d is not None]


def read_env_file(path: Path) -> dict[str, str]:
    """A kustomize ``envs:`` file: KEY=VALUE lines, ``#`` comments, blank lines."""
    env: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
            raise AssertionError(f"{path.name}:{lineno}: not KEY=VALUE: {raw!r}")
        env[name] = value
    return env


def k8s_resources() -> list[dict[str, Any]]:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs.extend(load_all(K8S / name))
    return docs


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_resources() if d["kind"] == kind]


def k8s_env() -> dict[str, str]:
    return read_env_file(K8S / "config.env")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(DEPLOY / "docker-compose.yml")
    return data


def bridge_services() -> dict[str, dict[str, Any]]:
    """Compose services that run our image."""
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if str(svc.get("image", "")).startswith("metrica-bridge")
    }


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(PROMETHEUS / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (GRAFANA / "dashboards" / "metrica-bridge.json").read_text(encoding="utf-8")
    )
    return data


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the dashboard."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    ]


# --- metrics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    labels: frozenset[str]


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


@cache
def families() -> dict[str, Family]:
    """Every family the service registers, from the registry (names, types) and the
    collectors (label names, which the registry cannot show before a child exists)."""
    labelnames: dict[str, frozenset[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            (described,) = value.describe()
            # prometheus_client keeps the declared label names only on this attribute.
            labelnames[described.name] = frozenset(value._labelnames)
    found: dict[str, Family] = {}
    for family in metrics.REGISTRY.collect():
        found[family.name] = Family(
            family.name, family.type, labelnames.get(family.name, frozenset())
        )
    return found


@cache
def exported_series() -> dict[str, Family]:
    """Series name as scraped (``..._total``, ``..._bucket``, …) → its family."""
    out: dict[str, Family] = {}
    for family in families().values():
        for suffix in _SUFFIXES[family.type]:
            out[family.name + suffix] = family
    return out


METRIC_NAME = re.compile(r"\b(metrica_bridge_[a-zA-Z0-9_]+)\b")
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def metric_names(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


def label_problems(expr: str) -> list[str]:
    """Label names in selectors and groupings that no series of that name can carry."""
    problems: list[str] = []
    series = exported_series()
    every_label = set().union(*(f.labels for f in families().values())) | TARGET_LABELS | {"le"}
    for name, body in SELECTOR.findall(expr):
        if name not in series:
            continue
        allowed = set(series[name].labels) | TARGET_LABELS
        if name.endswith("_bucket"):
            allowed.add("le")
        problems += [
            f"{name}{{{label}}}" for label in MATCHER.findall(body) if label not in allowed
        ]
    for group in GROUPING.findall(expr):
        labels = [x.strip() for x in group.split(",") if x.strip()]
        problems += [f"by/on ({label})" for label in labels if label not in every_label]
    return problems


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool not installed (Debian package `prometheus`; .ci/install-promtool installs it)"
        )
    return path
