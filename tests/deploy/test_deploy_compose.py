"""The docker compose stack is coherent: every reference resolves (services, files, ports,
topics, scrape targets). It cannot be started here (no Docker engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.deploy.deploy_support import (
    DEPLOY,
    GRAFANA,
    PROMETHEUS,
    TOPIC_ENV,
    TOPICS,
    bridge_services,
    compose,
    load_yaml,
)


def _consumers() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in bridge_services().items() if s["command"][0] == "run"}


def test_the_stack_has_every_part() -> None:
    services = compose()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    assert not any("zookeeper" in name for name in services)
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    commands = {n: s["command"][0] for n, s in bridge_services().items()}
    assert commands["sandbox"] == "sandbox"
    assert commands["schema-sync"] == "schema-sync"
    assert commands["simulator"] == "simulate"
    assert services["simulator"]["profiles"] == ["simulate"]
    assert services["schema-sync"]["restart"] == "no"


def test_one_consumer_per_topic() -> None:
    seen = {}
    for name, svc in _consumers().items():
        command = svc["command"]
        assert command[:2] == ["run", "--topic"], name
        topic = command[2]
        assert svc["environment"][TOPIC_ENV[topic]] == topic
        seen[topic] = name
    assert sorted(seen) == sorted(TOPICS)


def test_dependencies_exist_and_consumers_wait_for_setup() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        for dep in deps:
            assert dep in services, f"{name} depends on unknown {dep}"
    for name, svc in _consumers().items():
        deps = svc["depends_on"]
        assert deps["schema-sync"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["kafka-init"]["condition"] == "service_completed_successfully", name


def test_addresses_point_at_compose_services() -> None:
    services = compose()["services"]
    kafka_env = services["kafka"]["environment"]
    for name, svc in bridge_services().items():
        if name == "sandbox":
            continue
        env = svc["environment"]
        host, port = env["KAFKA_BOOTSTRAP_SERVERS"].split(":")
        assert host in services
        assert f"//{host}:{port}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
        assert env["STORE_URL"].split("@")[1].split(":")[0] in services
        api_host = env["METRICA_API_URL"].split("//")[1].split(":")[0]
        assert api_host == "sandbox"


def test_sandbox_accepts_what_the_consumers_send() -> None:
    sandbox = bridge_services()["sandbox"]["command"]
    flags = dict(zip(sandbox[1::2], sandbox[2::2], strict=True))
    token_file = compose()["secrets"]["metrica_token"]["file"]
    token = (DEPLOY / token_file).read_text(encoding="utf-8").strip()
    assert flags["--token"] == token
    assert flags["--host"] == "0.0.0.0"  # reachable from the other containers
    for name, svc in bridge_services().items():
        if name == "sandbox":
            continue
        env = svc["environment"]
        assert env["METRICA_COUNTER_ID"] == flags["--counter-id"], name
        assert env["METRICA_API_URL"].endswith(":" + flags["--port"]), name
        assert env["METRICA_TOKEN_FILE"] == "/run/secrets/metrica_token", name
        assert "metrica_token" in svc["secrets"], name


def test_mounted_files_exist() -> None:
    for name, svc in compose()["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
    status_map = next(iter(_consumers().values()))["environment"]["STATUS_MAP_FILE"]
    for name, svc in _consumers().items():
        targets = [v.split(":")[1] for v in svc["volumes"]]
        assert status_map in targets, name


def test_stop_grace_outlasts_the_drain() -> None:
    for name, svc in _consumers().items():
        grace = int(str(svc["stop_grace_period"]).rstrip("s"))
        assert grace > float(svc["environment"]["SHUTDOWN_TIMEOUT_S"]), name


def test_prometheus_scrapes_every_consumer_and_loads_the_alerts() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "metrica-bridge"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    expected = {f"{n}:{s['environment']['METRICS_PORT']}" for n, s in _consumers().items()}
    assert targets == expected
    for group in job["static_configs"]:
        # A `topic` target label would clash with the service's own and become exported_topic.
        assert "topic" not in group.get("labels", {})
    for name in config["rule_files"]:
        assert (PROMETHEUS / name).is_file()
    mounts = compose()["services"]["prometheus"]["volumes"]
    assert "./prometheus:/etc/prometheus:ro" in mounts


def test_grafana_is_provisioned() -> None:
    services = compose()["services"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    provisioning = DEPLOY / mounts["/etc/grafana/provisioning"]
    (datasource,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = load_yaml(provisioning / "dashboards" / "metrica-bridge.yml")["providers"]
    dashboards_dir = provider["options"]["path"]
    assert Path(DEPLOY / mounts[dashboards_dir]).resolve() == (GRAFANA / "dashboards").resolve()
    assert (GRAFANA / "dashboards" / "metrica-bridge.json").is_file()


def test_published_ports_are_bound_to_loopback_only() -> None:
    """The sandbox's /_sandbox/faults, Grafana's admin/admin, Kafka, Prometheus, /metrics:
    nothing of the local stack answers on the network (issue 16, item 17)."""
    published = {
        name: [str(p) for p in svc.get("ports", [])] for name, svc in compose()["services"].items()
    }
    assert published["sandbox"]
    assert published["grafana"]
    for name, ports in published.items():
        for port in ports:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
