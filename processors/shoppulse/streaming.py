"""The one way shoppulse builds a Quix Streams application, so every processor has the same guarantees."""

from __future__ import annotations

import gc
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import start_http_server
from quixstreams import Application
from quixstreams.models.topics.exceptions import TopicNotFoundError
from quixstreams.state.rocksdb import RocksDBOptions

from shoppulse.settings import Settings

log = logging.getLogger(__name__)

TOPIC_VISIBLE_ATTEMPTS = 5
# Event-time processing needs the partitions of a topic interleaved finely, also while catching up
# on a backlog: small per-partition fetches keep the disorder this adds to a few hundred events.
# The broker answers a fetch once 64 KiB are ready or after 50 ms, and producers wait up to 25 ms
# to fill a batch: librdkafka's defaults (answer at the first byte, 5 ms linger) have the broker
# serve hundreds of tiny requests a second, a large share of its CPU at a few thousand events/s
# (`shoppulse bench pipeline` measures it); these cost at most 75 ms more per hop.
INTERLEAVED_CONSUMER_CONFIG = {"max.partition.fetch.bytes": 64 * 1024, "fetch.min.bytes": 64 * 1024,
                               "fetch.wait.max.ms": 50}
BATCHING_PRODUCER_CONFIG = {"linger.ms": 25}
# Quix's defaults (a 1 GiB block cache filled lazily, 3 x 64 MiB memtables per store) let a
# processor's RSS climb for many minutes; ours is small, hot state, so bound RocksDB's memory.
STATE_OPTIONS = RocksDBOptions(block_cache_size=64 * 1024 * 1024, write_buffer_size=8 * 1024 * 1024,
                               max_write_buffer_number=2)


class ProcessorStartError(RuntimeError):
    """A processor cannot start; the message says what is wrong and what to set."""


def serve_metrics(port: int, host: str, setting: str) -> None:
    """Expose the process' Prometheus metrics on ``host:port`` (``setting`` names the port's variable)."""
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        raise ProcessorStartError(f"cannot serve metrics on {host}:{port} ({exc.strerror}): another process uses "
                                  f"the port; set {setting} to a free one") from None


def require_broker(bootstrap: str, timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for a broker of ``bootstrap`` to accept a connection, so that a wrong
    address is one clear error rather than a client library's retries and traceback."""
    addresses: list[tuple[str, int]] = []
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ProcessorStartError(f"KAFKA_BOOTSTRAP_SERVERS: {address.strip()!r} is not host:port")
        try:
            socket.getaddrinfo(host.strip("[]"), int(port))
        except socket.gaierror as exc:
            raise ProcessorStartError(f"the Kafka broker host {host} does not resolve ({exc.strerror}): "
                                      "check KAFKA_BOOTSTRAP_SERVERS") from None
        addresses.append((host.strip("[]"), int(port)))
    deadline = time.monotonic() + timeout_s
    while True:
        for host_port in addresses:
            try:
                socket.create_connection(host_port, timeout=min(5.0, timeout_s)).close()
                return
            except OSError as exc:
                last = exc
        if time.monotonic() >= deadline:
            raise ProcessorStartError(f"no Kafka broker answers at {bootstrap} within {timeout_s:g} s "
                                      f"({last.strerror or last}): start it or set KAFKA_BOOTSTRAP_SERVERS")
        time.sleep(0.5)


def require_writable(folder: Path, setting: str) -> None:
    """``folder`` exists (created if need be) and this process may write in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ProcessorStartError(f"cannot write in {folder} ({exc.strerror}): set {setting} to a folder this "
                                  "user may write") from None


def prepare_processor(settings: Settings, metrics_port: int, port_setting: str) -> None:
    """What a processor checks and starts before its application: a data folder it may write, its
    metrics on ``metrics_port`` (``port_setting`` names that port's variable) and a broker that answers."""
    require_writable(settings.data_dir, "SHOPPULSE_DATA_DIR")
    serve_metrics(metrics_port, settings.host, port_setting)
    require_broker(settings.kafka_bootstrap, settings.kafka_connect_timeout_s)


def processor_app(settings: Settings, consumer_group: str, commit_interval_s: float) -> Application:
    """Exactly-once (produced messages, state and offsets commit together), reading from the
    earliest offset on first start, with its state in the data folder."""
    return Application(
        broker_address=settings.kafka_bootstrap,
        consumer_group=consumer_group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=commit_interval_s,
        state_dir=str(settings.data_dir / "state" / consumer_group),
        loglevel="WARNING",
        consumer_extra_config=INTERLEAVED_CONSUMER_CONFIG,
        rocksdb_options=STATE_OPTIONS,
        producer_extra_config=BATCHING_PRODUCER_CONFIG,
    )


def built_once_topics_are_visible(build: Callable[[], Application], attempts: int = TOPIC_VISIBLE_ATTEMPTS,
                                  pause_s: float = 1.0) -> Application:
    """``build()``, again while it fails on a topic not found: Quix creates a state store's changelog
    topic and reads it back at once, and a KRaft broker may not show a topic it has just created
    (the processor used to exit once on a fresh start and wait for its supervisor's restart)."""
    for attempt in range(1, attempts + 1):
        try:
            return build()
        except TopicNotFoundError as exc:
            if attempt == attempts:
                raise
            log.info("a topic just created is not visible yet, building again", extra={"error": str(exc)})
            time.sleep(pause_s)
    raise AssertionError("unreachable")


def run_processor(app: Application) -> None:
    """Run ``app`` until SIGTERM/SIGINT, with every object built so far (modules, the app, its
    topics and state) frozen out of the garbage collector's view: they live as long as the
    process, and scanning them made each full collection in a processor a 100 ms pause."""
    gc.freeze()
    app.run()
