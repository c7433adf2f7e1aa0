"""Render deploy/k8s/prometheusrule.yaml from deploy/prometheus/alerts.yml.

alerts.yml is the one source (Prometheus loads it directly in docker compose, promtool tests
it); the Prometheus Operator wants the same groups wrapped in a PrometheusRule. Run
``python deploy/prometheus/render_rule.py`` after editing the alerts; tests/deploy fails while
the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "alerts.yml"
TARGET = HERE.parent / "k8s" / "prometheusrule.yaml"
HEADER = (
    "# GENERATED from deploy/prometheus/alerts.yml by deploy/prometheus/render_rule.py: edit\n"
    "# alerts.yml, then re-run the script. Your Prometheus may select rules by a label (e.g.\n"
    "# release: prometheus): add it under metadata.labels.\n"
)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, so the rule reads like alerts.yml."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(source: Path = SOURCE) -> str:
    groups: Any = yaml.safe_load(source.read_text(encoding="utf-8"))["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "metrica-bridge",
            "labels": {"app.kubernetes.io/name": "metrica-bridge"},
        },
        "spec": {"groups": groups},
    }
    body = yaml.dump(rule, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return HEADER + body


def main() -> int:
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
