"""`shoppulse up`: start the local stack's components in order, watch their health, stop them all.

Components: the ClickHouse endpoint (its own process, owner of the database folder), the
Kafka broker (unless KAFKA_BOOTSTRAP_SERVERS points at one), Prometheus (when Debian's
package is installed), and this supervisor's own metrics. Only what this supervisor
started is ever stopped by it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import requests
from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from shoppulse import clickhouse
from shoppulse.devstack.kafka import KafkaBroker, resolve_kafka
from shoppulse.devstack.process import ManagedProcess, StartupError, require_free_port, tail, wait_until
from shoppulse.devstack.prometheus import prometheus_binary, prometheus_process
from shoppulse.settings import Settings
from shoppulse.sink.migrations import ensure_reader_user, migrate
from shoppulse.topics import create_topics

log = logging.getLogger(__name__)

CLICKHOUSE_READY_TIMEOUT_S = 60.0
PROMETHEUS_READY_TIMEOUT_S = 30.0
HEALTH_TIMEOUT_S = 1.0
MAX_RESTART_BACKOFF_S = 30.0
STATE_FILE = "stack.json"
LOCK_FILE = "up.lock"


@dataclass(frozen=True)
class ProcessorSpec:
    """A pipeline process `shoppulse up` runs and restarts when it crashes."""

    name: str
    argv: list[str]
    address: str = "-"
    health_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)


class AlreadyRunningError(StartupError):
    """Another `shoppulse up` holds this data folder."""


@dataclass
class Component:
    name: str
    address: str
    check: Callable[[], bool]
    stop: Callable[[], None] = lambda: None
    process: ManagedProcess | None = None
    external: bool = False
    started_at: float = field(default_factory=time.time)
    healthy: bool = False
    restart: Callable[[], None] | None = None
    restarts: int = 0
    next_restart_at: float = 0.0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def state(self) -> str:
        if self.process is not None and not self.process.is_running():
            return f"exited ({self.process.returncode})"
        if self.healthy:
            return "external" if self.external else "healthy"
        return "unreachable" if self.external else "unhealthy"


def http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=HEALTH_TIMEOUT_S).ok
    except requests.RequestException:
        return False


def tcp_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=HEALTH_TIMEOUT_S):
            return True
    except (OSError, ValueError):
        return False


class LocalStack:
    def __init__(self, settings: Settings, with_prometheus: bool = True,
                 processors: Sequence[ProcessorSpec] = ()) -> None:
        self.settings = settings
        self.with_prometheus = with_prometheus
        self.processors = list(processors)
        self.data_dir = settings.data_dir.resolve()
        self.components: list[Component] = []
        self._lock: IO[str] | None = None
        self._metrics_server: object | None = None
        self._heartbeat_client: Client | None = None
        self._registry = CollectorRegistry()
        self._up_gauge = Gauge("shoppulse_component_up", "1 when the component answers its health check",
                               ["component"], registry=self._registry)

    # -- start ----------------------------------------------------------------------------

    def preflight(self) -> None:
        """Everything that can be checked before starting anything, each failure one clear line."""
        self._check_data_dir()
        self._take_lock()
        s = self.settings
        problems = []
        ports = [(s.clickhouse_port, "the ClickHouse endpoint", "SHOPPULSE_CLICKHOUSE_PORT",
                  not s.uses_external_clickhouse),
                 (s.kafka_port, "the Kafka broker", "SHOPPULSE_KAFKA_PORT", not s.uses_external_kafka),
                 (s.kafka_controller_port, "the Kafka controller", "SHOPPULSE_KAFKA_CONTROLLER_PORT",
                  not s.uses_external_kafka),
                 (s.prometheus_port, "Prometheus", "SHOPPULSE_PROMETHEUS_PORT", self._prometheus_enabled()),
                 (s.metrics_port, "the supervisor's metrics", "SHOPPULSE_METRICS_PORT", True),
                 (s.ingest_metrics_port, "the ingestion processor's metrics", "SHOPPULSE_INGEST_METRICS_PORT",
                  any(p.name == "ingest" for p in self.processors)),
                 (s.aggregate_metrics_port, "the aggregation processor's metrics", "SHOPPULSE_AGGREGATE_METRICS_PORT",
                  any(p.name == "aggregate" for p in self.processors))]
        for port, what, setting, needed in ports:
            if needed:
                try:
                    require_free_port(s.host, port, what, setting)
                except StartupError as exc:
                    problems.append(str(exc))
        if problems:
            self._release_lock()
            raise StartupError("\n".join(problems))

    def start(self, report: Callable[[str], None] = lambda _: None) -> None:
        """Start every component in order and wait until each is healthy. On failure, what
        was started is stopped again before the error propagates."""
        self.preflight()
        try:
            self._start_metrics()
            report("starting the ClickHouse endpoint (embedded ClickHouse engine)")
            self._start_clickhouse()
            report("starting the Kafka broker")
            self._start_kafka()
            if self._prometheus_enabled():
                report("starting Prometheus")
                self._start_prometheus()
            report("applying ClickHouse migrations")
            applied = migrate(lambda db: clickhouse.connect(self.settings, db), self.settings.clickhouse_database,
                              self.settings.migrations_dir)
            report(f"{len(applied)} migration(s) applied")
            self._ensure_reader()
            created = create_topics(self.settings.kafka_bootstrap, self.settings.topic_partitions,
                                    self.settings.topic_replication)
            report(f"{len(created)} topic(s) created")
            for spec in self.processors:
                report(f"starting {spec.name}")
                self._start_processor(spec)
            self.refresh()
            self._write_state()
        except BaseException:
            self.stop()
            raise

    def _prometheus_enabled(self) -> bool:
        return self.with_prometheus and prometheus_binary() is not None

    def _check_data_dir(self) -> None:
        probe = self.data_dir / ".write-test"
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise StartupError(f"the data folder {self.data_dir} is not writable ({exc.strerror}): "
                               "choose another with SHOPPULSE_DATA_DIR=<folder>") from None

    def _take_lock(self) -> None:
        path = self.data_dir / LOCK_FILE
        lock = path.open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            pid = lock.read().strip() or "?"
            lock.close()
            raise AlreadyRunningError(
                f"shoppulse up is already running for {self.data_dir} (pid {pid}): use it, or stop it with "
                f"Ctrl-C in its terminal or `kill -TERM {pid}`") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _start_metrics(self) -> None:
        address = f"{self.settings.host}:{self.settings.metrics_port}"
        self._metrics_server, _ = start_http_server(self.settings.metrics_port, addr=self.settings.host,
                                                    registry=self._registry)
        self.components.append(Component("supervisor metrics", address, lambda: http_ok(f"http://{address}/metrics"),
                                          stop=self._stop_metrics))

    def _stop_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()  # type: ignore[attr-defined]
            self._metrics_server.server_close()  # type: ignore[attr-defined]
            self._metrics_server = None

    def _ensure_reader(self) -> None:
        """Grafana's read-only ClickHouse user, when a password for it is set."""
        if not self.settings.clickhouse_grafana_password:
            return
        client = clickhouse.connect(self.settings)
        try:
            ensure_reader_user(client, self.settings.clickhouse_grafana_user, self.settings.clickhouse_grafana_password)
        finally:
            client.close()

    def _start_clickhouse(self) -> None:
        url = self.settings.clickhouse_http_url
        ping = lambda: http_ok(f"{url}/ping")  # noqa: E731
        if self.settings.uses_external_clickhouse:
            self.components.append(Component("clickhouse", url, ping, external=True))
            wait_until(ping, CLICKHOUSE_READY_TIMEOUT_S, f"ClickHouse at {url}")
            return
        process = ManagedProcess("clickhouse", [
            sys.executable, "-m", "shoppulse", "clickhouse", "serve",
            "--data-dir", str(self.data_dir / "clickhouse"),
            "--host", self.settings.host, "--port", str(self.settings.clickhouse_port),
        ], self.data_dir / "logs" / "clickhouse.log")
        process.start()
        self.components.append(Component("clickhouse", url, ping, stop=process.stop, process=process))
        wait_until(ping, CLICKHOUSE_READY_TIMEOUT_S, f"the ClickHouse endpoint on {url}",
                   alive=process.is_running, on_fail=lambda: tail(process.log_path))

    def _start_kafka(self) -> None:
        bootstrap = self.settings.kafka_bootstrap
        if self.settings.uses_external_kafka:
            first = bootstrap.split(",")[0].strip()
            self.components.append(Component("kafka", bootstrap, lambda: tcp_open(first), external=True))
            return
        libs = resolve_kafka(self.settings.kafka_version, self.settings.cache_dir)
        broker = KafkaBroker(libs, self.data_dir / "kafka", self.settings.host, self.settings.kafka_port,
                             self.settings.kafka_controller_port, self.settings.kafka_heap)
        component = Component("kafka", bootstrap, lambda: tcp_open(bootstrap), stop=broker.stop)
        self.components.append(component)
        broker.start()
        component.process = broker.process

    def _start_prometheus(self) -> None:
        binary = prometheus_binary()
        assert binary is not None
        s = self.settings
        targets = {"shoppulse-supervisor": f"{s.host}:{s.metrics_port}"}
        targets |= {f"shoppulse-{spec.name}": spec.address for spec in self.processors if spec.health_url}
        if not s.uses_external_clickhouse:
            targets["shoppulse-clickhouse"] = f"{s.host}:{s.clickhouse_port}"
        process = prometheus_process(binary, self.data_dir / "prometheus", s.host, s.prometheus_port, targets)
        address = f"http://{s.host}:{s.prometheus_port}"
        ready = lambda: http_ok(f"{address}/-/ready")  # noqa: E731
        process.start()
        self.components.append(Component("prometheus", address, ready, stop=process.stop, process=process))
        wait_until(ready, PROMETHEUS_READY_TIMEOUT_S, f"Prometheus on {address}",
                   alive=process.is_running, on_fail=lambda: tail(process.log_path))

    def _start_processor(self, spec: ProcessorSpec) -> None:
        process = ManagedProcess(spec.name, spec.argv, self.data_dir / "logs" / f"{spec.name}.log", env=spec.env)
        process.start()
        health_url = spec.health_url
        check = (lambda: process.is_running() and http_ok(health_url)) if health_url else process.is_running
        self.components.append(Component(spec.name, spec.address, check, stop=process.stop, process=process,
                                         restart=process.start))

    # -- watch ----------------------------------------------------------------------------

    def refresh(self) -> list[Component]:
        """Run every component's health check, restarting crashed processors with back-off."""
        for component in self.components:
            self._restart_if_crashed(component)
            component.healthy = component.check()
            self._up_gauge.labels(component.name).set(1 if component.healthy else 0)
        return self.components

    def _restart_if_crashed(self, component: Component) -> None:
        if component.restart is None or component.process is None or component.process.is_running():
            return
        now = time.time()
        if component.next_restart_at == 0.0:
            component.next_restart_at = now + min(MAX_RESTART_BACKOFF_S, 2.0 ** component.restarts)
            log.warning("processor exited, restarting", extra={"component": component.name,
                                                               "code": component.process.returncode})
        elif now >= component.next_restart_at:
            component.restart()
            component.restarts += 1
            component.next_restart_at = 0.0
            component.started_at = now

    def record_heartbeats(self) -> None:
        """One row per component into ``component_heartbeats`` (skipped while ClickHouse is down)."""
        now = datetime.now(UTC)
        rows = [[now, c.name, c.state, c.address, c.pid or 0, ""] for c in self.components]
        try:
            if self._heartbeat_client is None:
                self._heartbeat_client = clickhouse.connect(self.settings)
            self._heartbeat_client.insert("component_heartbeats", rows,
                                          column_names=["ts", "component", "state", "address", "pid", "detail"])
        except Exception as exc:  # ClickHouse down must not stop the supervisor
            log.warning("heartbeat not recorded", extra={"error": str(exc)[:200]})
            self._heartbeat_client = None

    def all_healthy(self) -> bool:
        return all(c.healthy for c in self.components)

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "started_at": time.time(),
            "kafka_bootstrap": self.settings.kafka_bootstrap,
            "clickhouse_url": self.settings.clickhouse_http_url,
            "components": {c.name: {"address": c.address, "pid": c.pid, "external": c.external}
                           for c in self.components},
        }
        (self.data_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    # -- stop -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop what this supervisor started, in reverse order; idempotent."""
        while self.components:
            component = self.components.pop()
            if component.external:
                continue
            try:
                component.stop()
            except Exception:
                log.exception("stopping a component failed", extra={"component": component.name})
        if self._heartbeat_client is not None:
            self._heartbeat_client.close()
            self._heartbeat_client = None
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / STATE_FILE).unlink()
        self._release_lock()


def read_state(data_dir: Path) -> dict[str, object] | None:
    """The running stack's state file, or None when no stack runs for ``data_dir``."""
    try:
        return dict(json.loads((data_dir / STATE_FILE).read_text()))
    except (OSError, ValueError):
        return None

