"""docker-compose.yml cannot run here (no Docker engine), so its wiring is checked statically:
every mounted path and referenced file exists, every service is health-checked and started in order."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shoppulse.settings import PROJECT_ROOT

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_health_check(name: str) -> None:
    check = SERVICES[name].get("healthcheck", {})
    assert check.get("test"), f"service {name} has no health check"
    assert not check.get("disable"), f"service {name} disables its health check"


@pytest.mark.parametrize(("name", "source", "target"),
                         [(n, s, t) for n, svc in SERVICES.items() for s, t in bind_mounts(svc)])
def test_every_mounted_path_exists(name: str, source: str, target: str) -> None:
    assert (PROJECT_ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"


def test_named_volumes_are_declared() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in COMPOSE.get("volumes", {}), f"{name} uses undeclared volume {source}"


def test_services_start_after_their_dependencies_are_healthy() -> None:
    for name, service in SERVICES.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
            assert rule["condition"] == "service_healthy", f"{name} starts before {dependency} is healthy"


def test_the_project_image_builds_from_files_that_exist() -> None:
    built = [s for s in SERVICES.values() if "build" in s]
    assert built, "the project's own image is part of the stack"
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (PROJECT_ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert "pip install -e ." in dockerfile, "the image finds clickhouse/ and scenarios/ beside the package"


def test_grafana_gets_the_clickhouse_plugin_and_our_provisioning() -> None:
    grafana = SERVICES["grafana"]
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_PLUGINS_PREINSTALL"]
    targets = {target for _, target in bind_mounts(grafana)}
    assert {"/etc/grafana/provisioning/datasources", "/etc/grafana/provisioning/dashboards"} <= targets
    # Alerting comes from the volume `shoppulse alerts render` fills before Grafana starts.
    alerting = next(v for v in grafana["volumes"] if ":/etc/grafana/provisioning/alerting" in v).split(":")[0]
    shoppulse = SERVICES["shoppulse"]
    renders_into = next(v.split(":")[1] for v in shoppulse["volumes"] if v.startswith(f"{alerting}:"))
    assert f"alerts render {renders_into}" in " ".join(shoppulse["entrypoint"])
    assert grafana["depends_on"]["shoppulse"]["condition"] == "service_healthy"


def test_kafka_runs_in_kraft_mode_without_zookeeper() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert not any("zookeeper" in str(v).lower() for v in kafka["environment"].values())


def test_secrets_come_from_the_environment_only() -> None:
    text = (PROJECT_ROOT / "docker-compose.yml").read_text()
    for match in re.finditer(r"(PASSWORD|TOKEN|WEBHOOK_URL|ROUTING_KEY):\s*(\S+)", text):
        assert match.group(2).startswith("${"), f"{match.group(0)} is not taken from the environment"


def test_provisioning_files_reference_environment_variables_compose_provides() -> None:
    env = SERVICES["grafana"]["environment"]
    for path in (PROJECT_ROOT / "grafana" / "provisioning").rglob("*.yaml"):
        document = yaml.safe_load(path.read_text())
        assert document["apiVersion"] == 1, f"{path} lacks apiVersion: 1"
        for variable in re.findall(r"\$\{(\w+)\}", path.read_text()):
            assert variable in env, f"{path.name} uses ${{{variable}}}, which compose does not give Grafana"


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) is needed; ./dev installs it"
    result = subprocess.run([promtool, "check", "config", str(PROJECT_ROOT / "prometheus" / "prometheus.yml")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
