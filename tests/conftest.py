"""Fixtures that start real components once per session and clean up after themselves."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from clickhouse_connect.driver.client import Client

from shoppulse import clickhouse
from shoppulse.devstack.kafka import KafkaBroker, resolve_kafka
from shoppulse.devstack.process import ManagedProcess, free_port, tail, wait_until
from shoppulse.settings import Settings, load_settings
from shoppulse.sink.migrations import migrate

TEST_PASSWORD = "test-secret"  # the test endpoint requires a password, as production does


def child_pids() -> list[int]:
    """Live (non-zombie) processes whose parent is this test process."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    yield
    leftovers = [pid for pid in child_pids() if Path(f"/proc/{pid}/cmdline").exists()]
    assert not leftovers, f"processes started by the tests are still running: {leftovers}"


@pytest.fixture(scope="session")
def kafka_libs() -> Path:
    settings = load_settings()
    return resolve_kafka(settings.kafka_version, settings.cache_dir)


def start_broker(libs: Path, data_dir: Path) -> KafkaBroker:
    broker = KafkaBroker(libs, data_dir, "127.0.0.1", free_port(), free_port(), heap="384m")
    broker.start()
    return broker


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_libs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka broker for the session (or the one KAFKA_BOOTSTRAP_SERVERS names)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = start_broker(kafka_libs, tmp_path_factory.mktemp("kafka"))
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


class EndpointProcess:
    """`shoppulse clickhouse serve` in its own process, as the local stack runs it."""

    def __init__(self, data_dir: Path, port: int | None = None, password: str = TEST_PASSWORD,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = ManagedProcess("clickhouse", [
            sys.executable, "-m", "shoppulse", "clickhouse", "serve",
            "--data-dir", str(data_dir), "--port", str(self.port)],
            data_dir.parent / f"{data_dir.name}-endpoint.log", env={"CLICKHOUSE_PASSWORD": password, **(env or {})})

    def start(self) -> EndpointProcess:
        self.process.start()
        try:
            wait_until(self.ping, 60, f"ClickHouse endpoint on {self.url}", alive=self.process.is_running,
                       on_fail=lambda: tail(self.process.log_path))
        except BaseException:
            self.process.stop()
            raise
        return self

    def ping(self) -> bool:
        try:
            return requests.get(f"{self.url}/ping", timeout=1).text == "Ok.\n"
        except requests.RequestException:
            return False

    def stop(self) -> None:
        self.process.stop()

    def settings(self, **overrides: object) -> Settings:
        return Settings(clickhouse_url=self.url, clickhouse_password=TEST_PASSWORD, **overrides)

    def migrated(self, prefix: str) -> tuple[Settings, Client]:
        """A fresh database named ``prefix_<random>`` with the shipped migrations applied: its
        settings and a client on it (the caller closes it)."""
        database = f"{prefix}_{uuid.uuid4().hex[:8]}"
        settings = self.settings(clickhouse_database=database)
        migrate(lambda db: clickhouse.connect(settings, db), database, settings.migrations_dir)
        return settings, clickhouse.connect(settings)


@pytest.fixture(scope="session")
def clickhouse_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EndpointProcess]:
    endpoint = EndpointProcess(tmp_path_factory.mktemp("clickhouse") / "db").start()
    try:
        yield endpoint
    finally:
        endpoint.stop()


@pytest.fixture
def ch(clickhouse_endpoint: EndpointProcess) -> Iterator[Client]:
    """A clickhouse-connect client on the default database of the session endpoint."""
    client = clickhouse.connect(clickhouse_endpoint.settings(), database="default")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def table_name(request: pytest.FixtureRequest) -> str:
    """A table name unique to the test, so tests sharing the endpoint never collide."""
    return "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:60]


def store_region(client: Client, incident_id: uuid.UUID, country: str, at: datetime, score: float = 0.9999999,
                 metric: str = "payment_failure_rate") -> None:
    """An anomaly region of a stored incident, as the sidecar writes it: what gives the incident its confidence
    (the strongest score of its regions), which the action policies ask for."""
    client.insert("anomalies", [[uuid.uuid4(), metric, country, at, "critical", 0.4, 0.05, 0.0, 0.1, score, [], at,
                                 incident_id]],
                  column_names=["anomaly_id", "metric", "country", "opened_at", "severity", "observed", "expected",
                                "lower", "upper", "score", "detectors", "updated_at", "incident_id"])


def last_tuesday_1500() -> datetime:
    """The demo data follow the markets' weekday and hour, so the test always plays the same week-time
    (the latest Tuesday 15:00 UTC, within the tables' 7-day TTL): the same series every run, rather
    than an occasional false alert that depends on when CI runs."""
    now = datetime.now(UTC)
    moment = (now - timedelta(days=(now.weekday() - 1) % 7)).replace(hour=15, minute=0, second=0, microsecond=0)
    return moment if moment <= now else moment - timedelta(days=7)
