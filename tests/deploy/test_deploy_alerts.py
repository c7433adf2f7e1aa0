"""Alert rules: complete annotations, runbooks that exist, only real metric names and labels,
and promtool's own syntax check and unit tests (skipped only where promtool is absent)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.deploy_support import (
    PROMETHEUS,
    ROOT,
    alert_rules,
    exported_series,
    label_problems,
    load_yaml,
    metric_names,
    promtool,
)

RULES = alert_rules()
IDS = [r["alert"] for r in RULES]


def _slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors() -> dict[str, set[str]]:
    """Anchors of README.md, plus those of docs/*.md (merged into the README by the lead)."""
    anchors: set[str] = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                anchors.add(_slug(line.lstrip("#")))
    return {"README.md": anchors}


def test_the_required_alerts_exist() -> None:
    names = set(IDS)
    assert {
        "MetricaBridgeConsumerLagGrowing",
        "MetricaBridgeDeadLetters",
        "MetricaBridgeMetricaUnavailable",
        "MetricaBridgeBudgetWillRunOut",
        "MetricaBridgeWaitingForQuota",
        "MetricaBridgeUploadsStale",
        "MetricaBridgeSetupError",
        "MetricaBridgeDown",
        "MetricaBridgeAbsent",
    } <= names
    assert len(names) == len(IDS), "duplicate alert names"


def test_the_daily_quota_is_paced_not_paged() -> None:
    """The pace spends the budget to the end of every quota day, and a quota wait loses nothing
    (DESIGN.md §4): no alert on a low remainder, warnings only, and the alerts a long wait
    would trip (no uploads, only 429s) leave it to MetricaBridgeWaitingForQuota."""
    by_name = {str(r["alert"]): r for r in RULES}
    assert not set(by_name) & {"MetricaBridgeQuotaLow", "MetricaBridgeQuotaExhausted"}
    on_remaining = [
        name
        for name, rule in by_name.items()
        if "metrica_bridge_metrica_daily_quota_remaining" in str(rule["expr"])
    ]
    assert not on_remaining, f"low every evening by design: {on_remaining}"
    for name in ("MetricaBridgeBudgetWillRunOut", "MetricaBridgeWaitingForQuota"):
        labels = by_name[name]["labels"]
        assert isinstance(labels, dict)
        assert labels["severity"] == "warning", name
    for name in (
        "MetricaBridgeUploadsStale",
        "MetricaBridgeMetricaUnavailable",
        "MetricaBridgeMetricaErrorsDominating",
    ):
        assert "metrica_bridge_metrica_quota_waiting" in str(by_name[name]["expr"]), name


@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_alert_is_documented(rule: dict[str, object]) -> None:
    labels = rule["labels"]
    annotations = rule["annotations"]
    assert isinstance(labels, dict)
    assert isinstance(annotations, dict)
    assert labels["severity"] in {"warning", "critical"}
    assert annotations["summary"]
    assert annotations["description"]
    page, _, anchor = str(annotations["runbook_url"]).partition("#")
    assert page == "README.md"
    assert anchor
    assert anchor in _anchors()[page], f"no heading for #{anchor} in README.md or docs/*.md"


@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_alert_uses_real_metrics_and_labels(rule: dict[str, object]) -> None:
    expr = str(rule["expr"])
    names = metric_names(expr)
    assert names or re.search(r"\bup\b", expr), "an alert on nothing"
    unknown = sorted(n for n in names if n not in exported_series())
    assert not unknown, f"not exported by metrica_bridge.metrics: {unknown}"
    assert not label_problems(expr)


def test_metric_check_catches_mistakes() -> None:
    assert "metrica_bridge_consumer_lag" in exported_series()
    assert "metrica_bridge_dlq_records_total" in exported_series()
    assert "metrica_bridge_dlq_records" not in exported_series()  # counters export _total
    assert "metrica_bridge_metrica_request_duration_seconds" not in exported_series()  # histogram
    assert label_problems('rate(metrica_bridge_dlq_records_total{class="x"}[5m])')
    assert label_problems("sum by (error_klass) (metrica_bridge_dlq_records_total)")
    assert not label_problems(
        'sum by (le) (rate(metrica_bridge_upload_records_bucket{job="j"}[5m]))'
    )


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    tests = load_yaml(PROMETHEUS / "alerts_test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    firing: set[str] = set()
    silent: set[str] = set()
    for group in tests["tests"]:
        for case in group["alert_rule_test"]:
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert set(IDS) <= firing, set(IDS) - firing
    assert set(IDS) <= silent, set(IDS) - silent


def _promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config() -> None:
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A threshold moved in alerts.yml must break alerts_test.yml."""
    rules = (PROMETHEUS / "alerts.yml").read_text(encoding="utf-8")
    (tmp_path / "alerts.yml").write_text(rules.replace(">= 10\n", ">= 1000\n"), encoding="utf-8")
    (tmp_path / "alerts_test.yml").write_text(
        (PROMETHEUS / "alerts_test.yml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    result = _promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "MetricaBridgeDeadLetters" in result.stdout + result.stderr
