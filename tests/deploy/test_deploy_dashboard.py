"""The Grafana dashboard: valid PromQL on real metric names, and the panels operators need."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.deploy_support import (
    GRAFANA,
    dashboard,
    dashboard_exprs,
    dashboard_panels,
    exported_series,
    label_problems,
    load_yaml,
    metric_names,
    promtool,
)

EXPRS = dashboard_exprs()


def _concrete(expr: str) -> str:
    """Grafana variables replaced by values, so promtool can parse the query."""
    expr = expr.replace("$__rate_interval", "5m")
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


def test_every_query_uses_real_metrics_and_labels() -> None:
    used: set[str] = set()
    for title, expr in EXPRS:
        names = metric_names(expr)
        unknown = sorted(n for n in names if n not in exported_series())
        assert not unknown, f"{title}: {unknown}"
        assert not label_problems(expr), f"{title}: {label_problems(expr)}"
        used |= names
    # Every family the service exports is on the dashboard somewhere.
    families = {s.name for s in exported_series().values()}
    shown = {exported_series()[n].name for n in used}
    assert families == shown, families - shown


def test_the_panels_operators_need() -> None:
    titles = {p["title"] for p in dashboard_panels()}
    for needed in (
        "Events by outcome",
        "Dead letters by class",
        "Lag per partition",
        "Requests by result",
        "Request latency p50 / p99",
        "Records per upload",
        "Daily quota remaining",
        "End-to-end latency p50 / p99",
        "Freshness",
        "Parked and in-flight",
    ):
        assert needed in titles, needed
    latency = " ".join(e for t, e in EXPRS if t == "Request latency p50 / p99")
    assert "histogram_quantile(0.5," in latency
    assert "histogram_quantile(0.99," in latency


def test_the_daily_budget_panels() -> None:
    """Pace, projection against the budget, time to the reset, what is left, and the wait."""
    wanted = {
        "Pace now": {"metrica_bridge_metrica_pace_requests_per_second"},
        "Pace vs requests sent": {
            "metrica_bridge_metrica_pace_requests_per_second",
            "metrica_bridge_metrica_requests_total",
        },
        "Projected use vs budget": {
            "metrica_bridge_metrica_requests_projected",
            "metrica_bridge_metrica_daily_budget",
        },
        "Quota day resets in": {"metrica_bridge_metrica_quota_reset_seconds"},
        "Daily quota remaining": {"metrica_bridge_metrica_daily_quota_remaining"},
        "Waiting for quota": {"metrica_bridge_metrica_quota_waiting"},
        "Quota waits": {"metrica_bridge_metrica_quota_waiting"},
    }
    for title, names in wanted.items():
        used = set().union(*(metric_names(e) for t, e in EXPRS if t == title))
        assert names <= used, (title, names - used)


def test_panels_are_unique_and_on_the_provisioned_datasource() -> None:
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids))
    (datasource,) = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == datasource["uid"]
    for panel in dashboard_panels():
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert dashboard()["uid"] == "metrica-bridge"


def test_queries_parse_with_promtool(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{i}", "expr": _concrete(expr)}
        for i, (_, expr) in enumerate(EXPRS)
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), "utf-8")
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parse_check_can_fail(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    bad = {"record": "x:y", "expr": "sum by (le (rate(metrica_bridge_upload_records_bucket[5m]))"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [bad]}]}), "utf-8")
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0


@pytest.mark.parametrize("expr", [e for _, e in EXPRS if "rate(" in e])
def test_rates_use_grafanas_rate_interval(expr: str) -> None:
    assert "[$__rate_interval]" in expr
