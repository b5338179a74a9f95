"""`shoppulse up` brings the whole local stack up healthy, refuses to clobber itself, and stops
everything it started — the way a user runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from checkout import ROOT
from shoppulse.devstack.process import free_port, port_in_use
from shoppulse.settings import load_settings

pytestmark = pytest.mark.integration
READY_WITHIN_S = 60


def stack_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPPULSE_", "CLICKHOUSE_", "KAFKA_"))}
    env.update({
        "SHOPPULSE_DATA_DIR": str(data_dir),
        "SHOPPULSE_CACHE_DIR": str(load_settings().cache_dir),
        "SHOPPULSE_CLICKHOUSE_PORT": str(free_port()),
        "SHOPPULSE_KAFKA_PORT": str(free_port()),
        "SHOPPULSE_KAFKA_CONTROLLER_PORT": str(free_port()),
        "SHOPPULSE_PROMETHEUS_PORT": str(free_port()),
        "SHOPPULSE_METRICS_PORT": str(free_port()),
        "SHOPPULSE_KAFKA_HEAP": "384m",
        "SHOPPULSE_INGEST_METRICS_PORT": str(free_port()),
        "SHOPPULSE_AGGREGATE_METRICS_PORT": str(free_port()),
        "SHOPPULSE_SIDECAR_METRICS_PORT": str(free_port()),
        "SHOPPULSE_ACTIONS_METRICS_PORT": str(free_port()),
        "SHOPPULSE_ACTIONS_WEBHOOK_PORT": str(free_port()),
        **extra,
    })
    return env


def shoppulse(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoppulse", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def wait_for_state(data_dir: Path, process: subprocess.Popen[str], timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"shoppulse up exited early:\n{process.stdout.read()}"  # type: ignore[union-attr]
        try:
            return json.loads((data_dir / "stack.json").read_text())
        except (OSError, ValueError):
            time.sleep(0.3)
    raise AssertionError(f"shoppulse up was not ready within {timeout_s} s")


def wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def ingest_total(metrics_url: str, name: str) -> float:
    try:
        text = requests.get(metrics_url, timeout=2).text
    except requests.RequestException:
        return -1
    values = [float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else -1


def children_named(parent: int, command: str) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == parent and command.encode() in cmdline and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


@pytest.fixture
def running_stack(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict, dict[str, str]]]:
    env = stack_env(tmp_path / "stack")
    process = subprocess.Popen([sys.executable, "-m", "shoppulse", "up", "--no-live", "--rate", "200"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        started = time.monotonic()
        state = wait_for_state(tmp_path / "stack", process, READY_WITHIN_S)
        state["ready_after_s"] = time.monotonic() - started
        yield process, state, env
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)


def test_up_starts_a_healthy_stack_and_sigterm_stops_all_of_it(running_stack) -> None:
    process, state, env = running_stack
    assert state["ready_after_s"] < READY_WITHIN_S
    components = state["components"]
    assert {"clickhouse", "kafka", "supervisor metrics"} <= set(components)
    assert requests.get(f"{state['clickhouse_url']}/ping", timeout=5).text == "Ok.\n"
    host, port = state["kafka_bootstrap"].split(":")
    socket.create_connection((host, int(port)), timeout=5).close()

    # Migrations are applied and topics exist: the stack is ready for the pipeline.
    import clickhouse_connect
    from kafka import KafkaAdminClient

    client = clickhouse_connect.get_client(dsn=state["clickhouse_url"], database="shoppulse",
                                           autogenerate_session_id=False)
    assert client.query("SELECT count() FROM schema_migrations").result_rows[0][0] >= 1
    admin = KafkaAdminClient(bootstrap_servers=state["kafka_bootstrap"])
    assert {"shop.events.raw", "shop.events.clean", "shop.events.dead-letter"} <= set(admin.list_topics())
    admin.close()
    if "prometheus" in components:
        assert requests.get(f"{components['prometheus']['address']}/-/ready", timeout=5).ok

    # The load generator's events flow through ingestion to the clean topic.
    metrics = f"http://{components['ingest']['address']}/metrics"
    assert wait_for(lambda: ingest_total(metrics, "shoppulse_ingest_events_out_total") > 50, 60)
    assert wait_for(lambda: client.query("SELECT count() FROM metrics_1s").result_rows[0][0] > 0, 60)
    # The anomaly sidecar scores each step of final aggregates as it arrives.
    sidecar = f"http://{components['sidecar']['address']}/metrics"
    assert wait_for(lambda: ingest_total(sidecar, "shoppulse_sidecar_steps_total") > 0, 90)
    # The actions processor (the shipped policies are dry runs) passes over the incidents.
    actions = f"http://{components['actions']['address']}/metrics"
    assert wait_for(lambda: ingest_total(actions, 'shoppulse_actions_passes_total{result="ok"}') > 0, 60)
    truth = (Path(env["SHOPPULSE_DATA_DIR"]) / "ground_truth.jsonl").read_text().splitlines()
    assert json.loads(truth[0])["kind"] == "payment_outage"

    # When the cores are contended, ingestion (the live figures) goes before the aggregation.
    assert niceness(components["aggregate"]["pid"]) == niceness(components["ingest"]["pid"]) + 5

    child_pids = [c["pid"] for c in components.values() if c["pid"]]
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    for pid in child_pids:
        assert not Path(f"/proc/{pid}").exists(), f"pid {pid} survived shoppulse up"
    for name in ("SHOPPULSE_CLICKHOUSE_PORT", "SHOPPULSE_KAFKA_PORT", "SHOPPULSE_METRICS_PORT"):
        assert not port_in_use("127.0.0.1", int(env[name])), f"{name} still bound"
    assert not (Path(env["SHOPPULSE_DATA_DIR"]) / "stack.json").exists()


def test_a_crashed_processor_is_restarted(running_stack) -> None:
    process, state, _env = running_stack
    first = state["components"]["ingest"]["pid"]
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: bool(children_named(process.pid, "ingest")) and
                    children_named(process.pid, "ingest") != [first], 30)
    metrics = f"http://{state['components']['ingest']['address']}/metrics"
    assert wait_for(lambda: ingest_total(metrics, "shoppulse_ingest_events_in_total") > 0, 60)


def test_a_second_up_says_one_is_running_and_leaves_it_alone(running_stack) -> None:
    process, state, env = running_stack
    second = shoppulse("up", "--no-live", env=env)
    assert second.returncode == 1
    assert f"shoppulse up is already running for {env['SHOPPULSE_DATA_DIR']} (pid {state['pid']})" in second.stderr
    assert process.poll() is None
    assert requests.get(f"{state['clickhouse_url']}/ping", timeout=5).ok


def test_ports_in_use_each_get_one_clear_line(tmp_path: Path) -> None:
    busy = [socket.socket(), socket.socket()]
    try:
        for sock in busy:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        env = stack_env(tmp_path / "stack", SHOPPULSE_CLICKHOUSE_PORT=str(busy[0].getsockname()[1]),
                        SHOPPULSE_KAFKA_PORT=str(busy[1].getsockname()[1]))
        result = shoppulse("up", "--no-live", env=env)
    finally:
        for sock in busy:
            sock.close()
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 2
    assert "SHOPPULSE_CLICKHOUSE_PORT" in lines[0] and "in use" in lines[0]
    assert "SHOPPULSE_KAFKA_PORT" in lines[1]


def test_an_unwritable_data_folder_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = shoppulse("up", "--no-live", env=stack_env(blocker / "data"))
    assert result.returncode == 1
    assert f"the data folder {blocker / 'data'} is not writable" in result.stderr
    assert "SHOPPULSE_DATA_DIR" in result.stderr


def test_a_bad_setting_is_one_clear_line(tmp_path: Path) -> None:
    result = shoppulse("up", "--no-live", env=stack_env(tmp_path, SHOPPULSE_KAFKA_PORT="nine"))
    assert result.returncode == 2
    assert "bad setting SHOPPULSE_KAFKA_PORT='nine'" in result.stderr
    result = shoppulse("up", "--no-live", env=stack_env(tmp_path, CLICKHOUSE_URL="localhost:8123"))
    assert "bad setting CLICKHOUSE_URL='localhost:8123'" in result.stderr


def test_with_an_external_broker_up_starts_none_and_leaves_it_running(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = stack_env(tmp_path / "stack", KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    process = subprocess.Popen([sys.executable, "-m", "shoppulse", "up", "--no-live", "--no-prometheus",
                                "--no-pipeline"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        state = wait_for_state(tmp_path / "stack", process, READY_WITHIN_S)
        assert state["components"]["kafka"] == {"address": kafka_bootstrap, "pid": None, "external": True}
        assert not port_in_use("127.0.0.1", int(env["SHOPPULSE_KAFKA_PORT"]))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    host, port = kafka_bootstrap.split(",", maxsplit=1)[0].split(":")
    socket.create_connection((host, int(port)), timeout=5).close()  # the external broker still runs
