"""Every deploy file parses, and the kustomization only names files that exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.deploy.deploy_support import (
    DEPLOY,
    K8S,
    json_files,
    load_all,
    load_yaml,
    read_env_file,
    yaml_files,
)


def test_there_are_files_to_check() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in yaml_files() + json_files()}
    assert {
        "docker-compose.yml",
        "k8s/kustomization.yaml",
        "prometheus/alerts.yml",
        "prometheus/alerts_test.yml",
        "prometheus/prometheus.yml",
        "grafana/dashboards/metrica-bridge.json",
    } <= names


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_yaml_parses(path: Path) -> None:
    docs = load_all(path)  # k8s files hold several documents
    assert docs, f"{path} is empty"
    assert all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("path", json_files(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_json_parses(path: Path) -> None:
    assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)


def test_k8s_documents_are_objects() -> None:
    for path in K8S.glob("*.yaml"):
        if path.name in {"kustomization.yaml", "status-map.yaml"}:
            continue
        for doc in load_all(path):
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path.name
            assert doc["metadata"].get("name"), path.name


def test_kustomization_names_existing_files() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    for name in kustomization["resources"]:
        assert (K8S / name).is_file(), name
    for generator in kustomization["configMapGenerator"]:
        for name in generator.get("envs", []):
            read_env_file(K8S / name)  # parses, or says which line does not
        for name in generator.get("files", []):
            assert (K8S / name).is_file(), name
    listed = set(kustomization["resources"])
    # Everything in k8s/ is either applied or deliberately left out (the Secret example).
    for path in K8S.glob("*.yaml"):
        if path.name not in {"kustomization.yaml", "status-map.yaml", "secret.example.yaml"}:
            assert path.name in listed, f"{path.name} is not in kustomization.yaml resources"
    assert "secret.example.yaml" not in listed, "apply -k must never overwrite the real token"


def test_yaml_rejects_garbage() -> None:
    # The parse checks above must be able to fail.
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load("a: [1, 2\nb: }")
