"""A Kafka broker for a benchmark: the configured one, or a temporary local one."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from shoppulse.local.kafka import KafkaBroker, resolve_kafka
from shoppulse.local.process import free_port
from shoppulse.settings import Settings


@contextlib.contextmanager
def bench_broker(settings: Settings) -> Iterator[str]:
    if settings.uses_external_kafka:
        yield settings.kafka_bootstrap
        return
    with tempfile.TemporaryDirectory(prefix="shoppulse-bench-") as folder:
        broker = KafkaBroker(resolve_kafka(settings.kafka_version, settings.cache_dir), Path(folder), settings.host,
                             free_port(), free_port(), heap="1g")
        broker.start()
        try:
            yield broker.bootstrap
        finally:
            broker.stop()
