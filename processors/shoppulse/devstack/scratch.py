"""A throwaway pipeline for benchmarks and recorded runs: its own Kafka broker (unless
KAFKA_BOOTSTRAP_SERVERS names one), its own ClickHouse endpoint (unless CLICKHOUSE_URL names one),
a migrated database, the pipeline's topics, and the processors as real `shoppulse …` processes
with their own metrics ports and state folder. Everything started is stopped on the way out."""

from __future__ import annotations

import contextlib
import secrets
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from shoppulse import clickhouse
from shoppulse.devstack.kafka import KafkaBroker, resolve_kafka
from shoppulse.devstack.process import ManagedProcess, free_port, tail, wait_until
from shoppulse.devstack.stack import http_ok
from shoppulse.settings import Settings
from shoppulse.sink.migrations import migrate
from shoppulse.topics import create_topics

METRICS_PORT_SETTING = {"ingest": "SHOPPULSE_INGEST_METRICS_PORT", "aggregate": "SHOPPULSE_AGGREGATE_METRICS_PORT",
                        "sidecar": "SHOPPULSE_SIDECAR_METRICS_PORT"}


@contextlib.contextmanager
def scratch_broker(settings: Settings) -> Iterator[str]:
    """The configured broker, or a temporary local one; yields its bootstrap address."""
    if settings.uses_external_kafka:
        yield settings.kafka_bootstrap
        return
    with tempfile.TemporaryDirectory(prefix="shoppulse-kafka-") as folder:
        broker = KafkaBroker(resolve_kafka(settings.kafka_version, settings.cache_dir), Path(folder), settings.host,
                             free_port(), free_port(), heap="1g")
        broker.start()
        try:
            yield broker.bootstrap
        finally:
            broker.stop()


@contextlib.contextmanager
def scratch_clickhouse(settings: Settings, folder: Path) -> Iterator[Settings]:
    """The configured ClickHouse, or an endpoint of our own over ``folder``; yields settings for it."""
    if settings.uses_external_clickhouse:
        yield settings
        return
    port = free_port()
    endpoint = ManagedProcess("clickhouse", [sys.executable, "-m", "shoppulse", "clickhouse", "serve",
                                             "--data-dir", str(folder / "db"), "--port", str(port)],
                              folder / "clickhouse.log", env={"CLICKHOUSE_PASSWORD": ""})
    endpoint.start()
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/ping"), 60, "the scratch ClickHouse endpoint",
                   alive=endpoint.is_running)
        yield settings.model_copy(update={"clickhouse_url": f"http://127.0.0.1:{port}", "clickhouse_password": ""})
    finally:
        endpoint.stop()


class ProcessorDiedError(RuntimeError):
    """A pipeline process exited while the run needed it."""


@dataclass
class ScratchPipeline:
    settings: Settings  # pointing at the scratch broker, endpoint and folder
    processes: dict[str, ManagedProcess]
    metrics_urls: dict[str, str]

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if not process.is_running():
                raise ProcessorDiedError(f"`shoppulse {name}` exited ({process.returncode}); its log "
                                         f"({process.log_path}) ends with:\n{tail(process.log_path)}")

    def metric(self, process: str, name: str) -> float | None:
        """The value of sample ``name`` on ``process``'s Prometheus endpoint (None if unreachable or absent)."""
        try:
            text = requests.get(self.metrics_urls[process], timeout=2).text
        except requests.RequestException:
            return None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    return sample.value
        return None

    def start(self) -> None:
        for process in self.processes.values():
            process.start()

    def log_tails(self, lines: int = 8) -> str:
        return "\n".join(f"--- {name}:\n{tail(p.log_path, lines)}" for name, p in self.processes.items())


@contextlib.contextmanager
def scratch_pipeline(settings: Settings, processors: Sequence[str] = ("ingest", "aggregate"),
                     args: dict[str, list[str]] | None = None, partitions: int | None = None,
                     report: Callable[[str], None] = lambda _: None,
                     start: bool = True) -> Iterator[ScratchPipeline]:
    """A broker, a migrated database, the topics (``partitions`` each, the setting's by default),
    and ``processors`` running (``args`` adds command-line arguments per processor; with ``start``
    False they start at the caller's ``ScratchPipeline.start()``). PII is hashed with a key made
    for this run."""
    with tempfile.TemporaryDirectory(prefix="shoppulse-scratch-") as tmp, scratch_broker(settings) as bootstrap:
        folder = Path(tmp)
        report("starting ClickHouse")
        with scratch_clickhouse(settings, folder) as endpoint:
            scratch = endpoint.model_copy(update={"kafka_bootstrap_servers": bootstrap, "data_dir": folder})
            migrate(lambda db: clickhouse.connect(scratch, db), scratch.clickhouse_database, scratch.migrations_dir)
            create_topics(bootstrap, partitions or settings.topic_partitions)
            ports = {name: free_port() for name in processors}
            env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "CLICKHOUSE_URL": scratch.clickhouse_http_url,
                   "CLICKHOUSE_PASSWORD": scratch.clickhouse_password, "SHOPPULSE_DATA_DIR": str(folder),
                   "SHOPPULSE_PII_KEY": secrets.token_hex(16),
                   **{METRICS_PORT_SETTING[name]: str(port) for name, port in ports.items()}}
            processes = {name: ManagedProcess(name, [sys.executable, "-m", "shoppulse", name,
                                                     *(args or {}).get(name, [])],
                                              folder / f"{name}.log", env=env) for name in processors}
            pipeline = ScratchPipeline(scratch, processes,
                                       {name: f"http://127.0.0.1:{port}/metrics" for name, port in ports.items()})
            try:
                if start:
                    report(f"starting {', '.join(processors)}")
                    pipeline.start()
                yield pipeline
            finally:
                for process in processes.values():
                    process.stop()
