"""Kubernetes manifests: one consumer group per topic, probes on the service's endpoints, the
token as a file, drain time, disruption budgets, lag autoscaling and scraping that line up."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest

from metrica_bridge.config import Settings, is_secret_variable, load_settings
from metrica_bridge.events import EventKind
from metrica_bridge.metrica.status_map import load_status_map
from tests.deploy.deploy_support import (
    DEPLOY,
    K8S,
    PROMETHEUS,
    TOPIC_ENV,
    TOPICS,
    k8s_env,
    k8s_kind,
    load_all,
    load_yaml,
)


def _deployments() -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in k8s_kind("Deployment")
    }


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    (container,) = _pod(doc)["containers"]
    return dict(container)


def _settings() -> Settings:
    env = {k: v for k, v in k8s_env().items() if not k.endswith(("TOKEN_FILE", "URL_FILE"))}
    return load_settings(environ=env)


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_one_deployment_per_topic() -> None:
    deployments = _deployments()
    assert sorted(deployments) == sorted(TOPICS)
    env = k8s_env()
    for topic, doc in deployments.items():
        args = _container(doc)["args"]
        # `run --topic $(TOPIC_…)`: the kubelet expands it from the ConfigMap, one name source.
        assert args == ["run", "--topic", f"$({TOPIC_ENV[topic]})"], args
        assert env[TOPIC_ENV[topic]] == topic
        assert _matches(
            doc["spec"]["selector"]["matchLabels"], doc["spec"]["template"]["metadata"]["labels"]
        )
        assert "replicas" not in doc["spec"], "the ScaledObject owns replicas"


@pytest.mark.parametrize("topic", TOPICS)
def test_probes_hit_the_service_endpoints_on_metrics_port(topic: str) -> None:
    container = _container(_deployments()[topic])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    metrics_port = int(k8s_env()["METRICS_PORT"])

    def probe(kind: str) -> tuple[str, int]:
        get = container[kind]["httpGet"]
        port = get["port"]
        return get["path"], ports[port] if isinstance(port, str) else port

    assert probe("livenessProbe") == ("/healthz", metrics_port)
    assert probe("readinessProbe") == ("/readyz", metrics_port)
    assert probe("startupProbe") == ("/healthz", metrics_port)


@pytest.mark.parametrize("topic", TOPICS)
def test_token_is_a_mounted_secret_file(topic: str) -> None:
    doc = _deployments()[topic]
    container = _container(doc)
    volumes = {v["name"]: v for v in _pod(doc)["volumes"]}
    token_file = Path(k8s_env()["METRICA_TOKEN_FILE"])
    env_names = {e["name"] for e in container.get("env", [])} | set(k8s_env())
    assert "METRICA_TOKEN" not in env_names, "the token must not travel as an environment variable"

    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == token_file.parent]
    assert mount.get("readOnly") is True
    projected = volumes[mount["name"]]["projected"]
    assert token_file.name in _secret_files(projected)
    # Readable by the pod's fsGroup (the non-root user), by nobody else.
    assert projected["defaultMode"] & 0o007 == 0
    assert projected["defaultMode"] & 0o040
    example = load_all(K8S / "secret.example.yaml")[0]
    example_text = (K8S / "secret.example.yaml").read_text(encoding="utf-8")
    for source in projected["sources"]:
        assert source["secret"]["name"] == example["metadata"]["name"]
        for item in source["secret"]["items"]:
            if source["secret"].get("optional"):  # a commented-out key of the example
                assert f"# {item['key']}: " in example_text, item
            else:
                assert item["key"] in example["stringData"], item


def _secret_files(projected: dict[str, Any]) -> dict[str, bool]:
    """File name -> whether its Secret key is required, in a projected secrets volume."""
    return {
        item["path"]: not source["secret"].get("optional", False)
        for source in projected["sources"]
        for item in source["secret"]["items"]
    }


def _file_variables() -> dict[str, str]:
    """``<SECRET>_FILE`` settings of config.env, the commented template lines included."""
    text = (K8S / "config.env").read_text(encoding="utf-8")
    return dict(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*_FILE)=(\S+)$", text, flags=re.MULTILINE))


@pytest.mark.parametrize("doc", [*_deployments().values(), *k8s_kind("Job")])
def test_every_secret_is_a_mounted_file(doc: dict[str, Any]) -> None:
    """No secret travels as an environment variable (``ps e``, ``kubectl describe``, crash
    dumps): the token, STORE_URL (its database password) and the Kafka password are files of
    the secrets volume, named by ``<VARIABLE>_FILE`` (issue 16, item 14)."""
    container = _container(doc)
    env_names = {e["name"] for e in container.get("env", [])} | set(k8s_env())
    secrets = sorted(n for n in env_names if is_secret_variable(n))
    assert not secrets, f"secrets passed as variables: {secrets}"
    files = _file_variables()
    assert {"METRICA_TOKEN_FILE", "STORE_URL_FILE", "KAFKA_SASL_PASSWORD_FILE"} <= set(files)
    mounts = {Path(m["mountPath"]): m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod(doc)["volumes"]}
    for name, value in files.items():
        if name == "STATUS_MAP_FILE":
            continue
        assert is_secret_variable(name.removesuffix("_FILE")), name
        path = Path(value)
        projected = volumes[mounts[path.parent]]["projected"]
        required = _secret_files(projected)
        assert path.name in required, name
        # Set in config.env (not commented out) only when the Secret must hold the key.
        assert required[path.name] == (name in k8s_env()), name


@pytest.mark.parametrize("topic", TOPICS)
def test_store_url_comes_from_the_secret(topic: str) -> None:
    doc = _deployments()[topic]
    path = Path(k8s_env()["STORE_URL_FILE"])
    (mount,) = [m for m in _container(doc)["volumeMounts"] if Path(m["mountPath"]) == path.parent]
    projected = {v["name"]: v for v in _pod(doc)["volumes"]}[mount["name"]]["projected"]
    (key,) = [
        i["key"]
        for s in projected["sources"]
        for i in s["secret"]["items"]
        if i["path"] == path.name
    ]
    example = load_all(K8S / "secret.example.yaml")[0]
    assert example["stringData"][key].startswith("postgresql://")
    assert "STORE_URL" not in k8s_env()


@pytest.mark.parametrize("topic", TOPICS)
def test_status_map_is_mounted_where_status_map_file_points(topic: str) -> None:
    doc = _deployments()[topic]
    path = Path(k8s_env()["STATUS_MAP_FILE"])
    (mount,) = [m for m in _container(doc)["volumeMounts"] if Path(m["mountPath"]) == path.parent]
    volume = {v["name"]: v for v in _pod(doc)["volumes"]}[mount["name"]]
    generators = {g["name"]: g for g in load_yaml(K8S / "kustomization.yaml")["configMapGenerator"]}
    assert generators[volume["configMap"]["name"]]["files"] == [path.name]


def test_status_map_follows_the_contract() -> None:
    status_map = load_yaml(K8S / "status-map.yaml")
    statuses = status_map["statuses"]
    assert status_map["initial_status"] in statuses
    assert status_map["paid_status"] in statuses
    for code, status in statuses.items():
        assert re.fullmatch(r"[\w\-:]+", status["id"]), code
        assert status["type"] in {"IN_PROGRESS", "PAID", "CANCELLED", "SPAM", "OTHER"}, code
        assert len(status.get("goals", [])) <= 10, code
    assert statuses[status_map["paid_status"]]["type"] == "PAID"
    # And the service's own loader accepts it.
    loaded = load_status_map(K8S / "status-map.yaml")
    assert loaded.paid.type == "PAID"
    assert loaded.translate("qualified") is not None


@pytest.mark.parametrize("topic", TOPICS)
def test_grace_period_outlasts_the_drain(topic: str) -> None:
    pod = _pod(_deployments()[topic])
    assert pod["terminationGracePeriodSeconds"] > _settings().shutdown_timeout_s
    assert _settings().shutdown_timeout_s >= 30


@pytest.mark.parametrize("topic", TOPICS)
def test_pod_is_non_root_with_resources(topic: str) -> None:
    doc = _deployments()[topic]
    pod, container = _pod(doc), _container(doc)
    assert pod["securityContext"]["runAsNonRoot"] is True
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert f"USER {pod['securityContext']['runAsUser']}:" in dockerfile
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]
    # maxSurge 0: a surge pod past the partition count would never be ready and stall rollouts.
    assert doc["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_every_deployment_has_a_disruption_budget() -> None:
    budgets = k8s_kind("PodDisruptionBudget")
    for topic, doc in _deployments().items():
        labels = doc["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if _matches(b["spec"]["selector"]["matchLabels"], labels)]
        assert len(matching) == 1, topic
        # Selects only this topic's pods, not the other groups'.
        others = [d for t, d in _deployments().items() if t != topic]
        for other in others:
            assert not _matches(
                matching[0]["spec"]["selector"]["matchLabels"],
                other["spec"]["template"]["metadata"]["labels"],
            )


def test_autoscaling_follows_lag_and_partitions() -> None:
    settings = _settings()
    env = k8s_env()
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in k8s_kind("ScaledObject")}
    for topic, doc in _deployments().items():
        obj = scaled[doc["metadata"]["name"]]
        spec = obj["spec"]
        partitions = int(obj["metadata"]["annotations"]["metrica-bridge/topic-partitions"])
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert meta["topic"] == topic
        assert meta["consumerGroup"] == settings.group_id(EventKind(topic))
        assert meta["bootstrapServers"] == env["KAFKA_BOOTSTRAP_SERVERS"]
        assert meta["allowIdleConsumers"] == "false"
        assert int(meta["lagThreshold"]) > 0


def test_metrics_are_scraped_from_every_pod_even_when_not_ready() -> None:
    (service,) = k8s_kind("Service")
    (monitor,) = k8s_kind("ServiceMonitor")
    assert service["spec"]["publishNotReadyAddresses"] is True
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics"
    assert port["port"] == int(k8s_env()["METRICS_PORT"])
    for doc in _deployments().values():
        assert _matches(service["spec"]["selector"], doc["spec"]["template"]["metadata"]["labels"])
    assert _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]
    assert endpoint["path"] == "/metrics"
    # The alerts select job="metrica-bridge"; the ServiceMonitor takes job from this label.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "metrica-bridge"


def test_schema_sync_job_uses_the_same_configuration() -> None:
    (job,) = k8s_kind("Job")
    container = _container(job)
    assert container["args"] == ["schema-sync"]
    deployment = next(iter(_deployments().values()))
    assert container["envFrom"] == _container(deployment)["envFrom"]
    assert _pod(job)["volumes"][:2] == _pod(deployment)["volumes"][:2]


def test_prometheus_rule_is_in_sync_with_alerts_yml() -> None:
    spec = importlib.util.spec_from_file_location("render_rule", PROMETHEUS / "render_rule.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.render()
    actual = (K8S / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert actual == expected, "run: python deploy/prometheus/render_rule.py"
    (rule,) = k8s_kind("PrometheusRule")
    assert rule["spec"]["groups"] == load_yaml(PROMETHEUS / "alerts.yml")["groups"]
