"""docker-compose.yml cannot run here (no Docker engine), so its wiring is checked statically:
every mounted path and referenced file exists, every service is health-checked and started in order."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from checkout import ROOT
from shoppulse.grafana.clickhouse_plugin import PLUGIN_VERSION

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


ONE_SHOT = {name for name, service in SERVICES.items() if service.get("restart") == "no"}
PROCESSORS = {"ingest": ["ingest"], "aggregate": ["aggregate"], "sidecar": ["sidecar"], "actions": ["actions", "run"]}
SCALABLE = ("ingest", "aggregate")


@pytest.mark.parametrize("name", sorted(set(SERVICES) - ONE_SHOT))
def test_every_service_has_a_health_check(name: str) -> None:
    check = SERVICES[name].get("healthcheck", {})
    assert check.get("test"), f"service {name} has no health check"
    assert not check.get("disable"), f"service {name} disables its health check"


@pytest.mark.parametrize(("name", "source", "target"),
                         [(n, s, t) for n, svc in SERVICES.items() for s, t in bind_mounts(svc)])
def test_every_mounted_path_exists(name: str, source: str, target: str) -> None:
    assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"


def test_named_volumes_are_declared() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in COMPOSE.get("volumes", {}), f"{name} uses undeclared volume {source}"


def test_services_start_after_their_dependencies_are_healthy_or_done() -> None:
    for name, service in SERVICES.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
            expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert rule["condition"] == expected, f"{name} starts before {dependency} is {expected}"


def test_migrations_topics_and_alerting_files_are_a_one_shot_service_everything_waits_for() -> None:
    assert {"migrate"} == ONE_SHOT
    script = " ".join(SERVICES["migrate"]["entrypoint"])
    assert "shoppulse db migrate" in script and "shoppulse kafka topics" in script
    for name in (*PROCESSORS, "loadgen", "grafana"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize(("name", "command"), PROCESSORS.items())
def test_each_processor_is_a_service_of_its_own(name: str, command: list[str]) -> None:
    service = SERVICES[name]
    assert service["command"] == command, f"{name} runs {service.get('command')}, not one processor"
    assert "up" not in service.get("entrypoint", []) and "up" not in service["command"]
    assert service["environment"]["SHOPPULSE_HOST"] == "0.0.0.0", "Prometheus scrapes it from another container"


@pytest.mark.parametrize("name", SCALABLE)
def test_scaled_services_fix_no_host_port_name_or_state_volume(name: str) -> None:
    """`docker compose up --scale ingest=3`: instances must not collide on a host port, a container name or
    a state folder (each keeps its state in its own container; Kafka's changelog topics restore it)."""
    service = SERVICES[name]
    assert "ports" not in service and "container_name" not in service
    assert not service.get("volumes"), f"{name}'s instances would share a state folder"


def test_prometheus_scrapes_every_instance_of_a_scaled_service() -> None:
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    discovered = {name for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", [])
                  for name in sd["names"]}
    assert set(PROCESSORS) <= discovered


def test_the_load_generator_runs_only_in_the_demo_profile() -> None:
    assert SERVICES["loadgen"]["profiles"] == ["demo"]
    assert SERVICES["loadgen"]["command"][0] == "loadgen"
    other = [name for name, s in SERVICES.items() if name != "loadgen" and "loadgen" in str(s.get("command", ""))]
    assert not other, f"{other} run the load generator outside the demo profile"


def test_the_project_image_builds_from_files_that_exist() -> None:
    built = [s for s in SERVICES.values() if "build" in s]
    assert built, "the project's own image is part of the stack"
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert "pip install -e" not in dockerfile, "the image installs the wheel, not the build context"
    assert "pip wheel" in dockerfile
    # the wheel's project files (setup.py) are all in the build context
    setup = (ROOT / "setup.py").read_text()
    bundled = re.search(r"PROJECT_FILES = \((.*?)\)", setup, re.S)
    assert bundled
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ") and "--from=" not in line}
    for name in re.findall(r'"([^"]+)"', bundled.group(1)):
        assert name in copied, f"the wheel bundles {name}, which the Dockerfile does not copy"
    assert {"setup.py", "MANIFEST.in"} <= {part for line in dockerfile.splitlines() if line.startswith("COPY ")
                                           for part in line.split()[1:-1]}


def test_grafana_gets_the_clickhouse_plugin_and_our_provisioning() -> None:
    grafana = SERVICES["grafana"]
    # The plugin release whose behaviour the dashboard lint mirrors (macros, query model), pinned as
    # Grafana's preinstall reads it (pkg/setting/setting_plugins.go: id@version) and never auto-updated.
    assert grafana["environment"]["GF_PLUGINS_PREINSTALL"] == f"grafana-clickhouse-datasource@{PLUGIN_VERSION}"
    assert grafana["environment"]["GF_PLUGINS_PREINSTALL_AUTO_UPDATE"] == "false"
    targets = {target for _, target in bind_mounts(grafana)}
    assert {"/etc/grafana/provisioning/datasources", "/etc/grafana/provisioning/dashboards"} <= targets
    # Alerting comes from the volume `shoppulse alerts render` fills before Grafana starts.
    alerting = next(v for v in grafana["volumes"] if ":/etc/grafana/provisioning/alerting" in v).split(":")[0]
    migrate = SERVICES["migrate"]
    renders_into = next(v.split(":")[1] for v in migrate["volumes"] if v.startswith(f"{alerting}:"))
    assert f"alerts render {renders_into}" in " ".join(migrate["entrypoint"])
    assert grafana["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_kafka_runs_in_kraft_mode_without_zookeeper() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert not any("zookeeper" in str(v).lower() for v in kafka["environment"].values())


def test_secrets_come_from_the_environment_only() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for match in re.finditer(r"(PASSWORD|TOKEN|WEBHOOK_URL|ROUTING_KEY):\s*(\S+)", text):
        assert match.group(2).startswith("${"), f"{match.group(0)} is not taken from the environment"


def test_provisioning_files_reference_environment_variables_compose_provides() -> None:
    env = SERVICES["grafana"]["environment"]
    for path in (ROOT / "grafana" / "provisioning").rglob("*.yaml"):
        document = yaml.safe_load(path.read_text())
        assert document["apiVersion"] == 1, f"{path} lacks apiVersion: 1"
        for variable in re.findall(r"\$\{(\w+)\}", path.read_text()):
            assert variable in env, f"{path.name} uses ${{{variable}}}, which compose does not give Grafana"


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) is needed; ./dev installs it"
    result = subprocess.run([promtool, "check", "config", str(ROOT / "prometheus" / "prometheus.yml")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
