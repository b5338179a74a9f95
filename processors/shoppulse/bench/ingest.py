"""`shoppulse bench ingest`: ingestion alone draining a backlog — the pipeline's first stage, which
limits `shoppulse bench pipeline` on this machine — measured from its own event counter once it is
past its start-up, beside a bare consumer's rate over the same events in the same run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shoppulse.bench.pipeline import bare_consumer_rate
from shoppulse.loadgen.generator import BadInput, EventStream
from shoppulse.loadgen.run import make_producer, run_replay
from shoppulse.local.scratch import scratch_pipeline
from shoppulse.settings import Settings

EVENTS_IN = "shoppulse_ingest_events_in_total"
WARM_EVENTS = 20_000  # start measuring once this many are in: the consumer group and state are up
BACKLOG_DAY = datetime(2026, 11, 24, 12, tzinfo=UTC)


@dataclass(frozen=True)
class IngestResult:
    events: int
    measured: float  # events counted over the measured span
    seconds: float
    ceiling_per_s: float

    @property
    def per_s(self) -> float:
        return self.measured / self.seconds if self.seconds else 0.0


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
        first, started = events_in() or 0.0, time.monotonic()
        while time.monotonic() - started < seconds and (events_in() or 0) < sent:
            pipeline.check_alive()
            time.sleep(1)
        last, elapsed = events_in() or 0.0, time.monotonic() - started
        report("measuring the bare consumer ceiling…")
        return IngestResult(sent, last - first, elapsed, bare_consumer_rate(pipeline.bootstrap, sent))
