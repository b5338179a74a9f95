"""`shoppulse bench floor`: the least CPU the chosen stack spends on one exactly-once hop — a Quix
Streams application built like the processors (``streaming.processor_app``: exactly-once, the same
Kafka client settings, ingestion's commit interval) that only copies each raw event's bytes to
another topic: no parsing, no state, no sink. It drains a backlog in this process; the span from
its WARM_EVENTS-th event to its last is measured, with the broker's CPU meanwhile.

Every event of the pipeline takes at least two such hops (ingestion, then the aggregation) besides
the load generator's produce and ClickHouse, so this bounds from below what a rate costs here."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shoppulse.bench.drain import WARM_EVENTS, DrainResult
from shoppulse.bench.ingest import send_raw_backlog
from shoppulse.bench.pipeline import cpu_seconds, cpu_seconds_since
from shoppulse.devstack.scratch import scratch_broker
from shoppulse.settings import Settings
from shoppulse.streaming import processor_app
from shoppulse.topics import RAW_EVENTS, TopicSpec, create_topics

COPY_TOPIC = TopicSpec("bench.floor.copy", "raw events copied by the floor benchmark's application")
CONSUMER_GROUP = "shoppulse-bench-floor"
THIS_PROCESS = "generator + bench"  # how bench.pipeline.cpu_seconds names the process it runs in
COPY_APP = "copy app"


class CopyMeter:
    """Counts the copied events; notes the time and every process's CPU at the WARM_EVENTS-th event
    and what was used since at the ``total``-th."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.started: tuple[float, dict[str, float]] | None = None
        self.result: DrainResult | None = None

    def __call__(self, _value: Any) -> None:
        self.count += 1
        if self.count == WARM_EVENTS:
            self.started = (time.monotonic(), cpu_seconds())
        elif self.count == self.total and self.started is not None:
            at, cpu = self.started
            used = cpu_seconds_since(cpu)
            used[COPY_APP] = used.pop(THIS_PROCESS, 0.0)  # nothing else runs in this process meanwhile
            self.result = DrainResult(self.total, self.total - WARM_EVENTS, time.monotonic() - at, used)


def measure(settings: Settings, events: int, seconds: float,
            report: Callable[[str], None] = lambda _: None) -> DrainResult:
    """The copy application draining a backlog of ``events`` raw events (``seconds`` bounds the wait)."""
    with scratch_broker(settings) as bootstrap, tempfile.TemporaryDirectory(prefix="shoppulse-floor-") as folder:
        create_topics(bootstrap, settings.topic_partitions, specs=(RAW_EVENTS, COPY_TOPIC))
        report(f"sending a backlog of about {events:,} raw events")
        sent = send_raw_backlog(bootstrap, events)
        scratch = settings.model_copy(update={"kafka_bootstrap_servers": bootstrap, "data_dir": Path(folder)})
        app = processor_app(scratch, CONSUMER_GROUP, settings.ingest_commit_interval_s)
        raw = app.topic(RAW_EVENTS.name, key_deserializer="bytes", value_deserializer="bytes")
        copy = app.topic(COPY_TOPIC.name, key_serializer="bytes", value_serializer="bytes")
        meter = CopyMeter(sent)
        app.dataframe(raw).update(meter).to_topic(copy)
        report("copying")
        app.run(timeout=seconds, count=sent, collect=False)
        if meter.result is None:
            raise CopyStalledError(f"the copy application got {meter.count:,} of the {sent:,} events and then none "
                                   f"for {seconds:.0f} s: see the broker's log, or allow longer (--seconds)")
        return meter.result


class CopyStalledError(RuntimeError):
    """The copy application stopped getting events before it had the whole backlog."""

