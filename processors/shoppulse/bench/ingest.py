"""`shoppulse bench ingest`: ingestion alone draining a backlog — the pipeline's first stage, which
limits `shoppulse bench pipeline` on this machine — measured from its own event counter once it is
past its start-up, beside a bare consumer's rate over the same events in the same run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shoppulse.bench.pipeline import bare_consumer_rate, cpu_seconds, cpu_seconds_since
from shoppulse.loadgen.generator import BadInput, EventStream
from shoppulse.loadgen.run import make_producer, run_replay
from shoppulse.local.scratch import scratch_pipeline
from shoppulse.settings import Settings

EVENTS_IN = "shoppulse_ingest_events_in_total"
WARM_EVENTS = 20_000  # start measuring once this many are in: the consumer group and state are up
BACKLOG_DAY = datetime(2026, 11, 24, 12, tzinfo=UTC)


@dataclass(frozen=True)
class DrainResult:
    """A processor draining a backlog: how many events it got through, and at what cost."""

    events: int  # in the backlog
    measured: float  # events counted over the measured span
    seconds: float
    cpu_s: dict[str, float]  # CPU seconds of each process over the measured span

    @property
    def per_s(self) -> float:
        return self.measured / self.seconds if self.seconds else 0.0

    def cpu_us_per_event(self) -> dict[str, float]:
        if not self.measured:
            return {}
        return {process: 1e6 * seconds / self.measured for process, seconds in self.cpu_s.items()}


@dataclass(frozen=True)
class IngestResult(DrainResult):
    ceiling_per_s: float


def measure(settings: Settings, events: int, seconds: float,
            report: Callable[[str], None] = lambda _: None) -> IngestResult:
    """``events`` (1 % invalid, 1 % duplicates) sent as a backlog, then ingestion's rate over ``seconds``."""
    with scratch_pipeline(settings, ("ingest",), report=report) as pipeline:
        rate = 1000.0
        span = timedelta(seconds=events / rate)
        stream = EventStream(rate, bad=BadInput(invalid=0.01, duplicates=0.01), seed=1)
        report(f"sending a backlog of about {events:,} events")
        sent = run_replay(make_producer(pipeline.bootstrap), stream, rate, BACKLOG_DAY - span, BACKLOG_DAY)
        def events_in() -> float | None:
            return pipeline.metric("ingest", EVENTS_IN)

        while (events_in() or 0) < WARM_EVENTS:
            pipeline.check_alive()
            time.sleep(0.5)
        first, started, cpu = events_in() or 0.0, time.monotonic(), cpu_seconds()
        while time.monotonic() - started < seconds and (events_in() or 0) < sent:
            pipeline.check_alive()
            time.sleep(1)
        last, elapsed, used = events_in() or 0.0, time.monotonic() - started, cpu_seconds_since(cpu)
        report("measuring the bare consumer ceiling…")
        return IngestResult(sent, last - first, elapsed, used, bare_consumer_rate(pipeline.bootstrap, sent))
