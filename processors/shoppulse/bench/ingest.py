"""`shoppulse bench ingest`: ingestion alone draining a backlog — the pipeline's first stage, which
limits `shoppulse bench pipeline` on this machine — measured from its own event counter once it is
past its start-up, beside a bare consumer's rate over the same events in the same run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shoppulse.bench.drain import DrainResult, drain
from shoppulse.bench.pipeline import bare_consumer_rate
from shoppulse.devstack.scratch import scratch_pipeline
from shoppulse.loadgen.generator import BadInput, EventStream
from shoppulse.loadgen.run import make_producer, run_replay
from shoppulse.settings import Settings

EVENTS_IN = "shoppulse_ingest_events_in_total"


def backlog_end() -> datetime:
    """Where a benchmark's backlog ends in event time: the last whole hour before now. Relative to now,
    so the topics' retention (15 days) never deletes a backlog while it is read and ingestion's time
    bounds accept it, whatever the day the benchmark runs."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)


def send_raw_backlog(bootstrap: str, events: int) -> int:
    """About ``events`` generated raw events (1 % invalid, 1 % duplicates) on the raw topic, 1,000 per
    second of event time up to ``backlog_end()``; returns how many were sent."""
    rate = 1000.0
    span = timedelta(seconds=events / rate)
    stream = EventStream(rate, bad=BadInput(invalid=0.01, duplicates=0.01), seed=1)
    end = backlog_end()
    return run_replay(make_producer(bootstrap), stream, rate, end - span, end)


@dataclass(frozen=True)
class IngestResult(DrainResult):
    ceiling_per_s: float


def measure(settings: Settings, events: int, seconds: float,
            report: Callable[[str], None] = lambda _: None) -> IngestResult:
    """``events`` (1 % invalid, 1 % duplicates) sent as a backlog, then ingestion's rate over ``seconds``."""
    with scratch_pipeline(settings, ("ingest",), report=report) as pipeline:
        report(f"sending a backlog of about {events:,} events")
        sent = send_raw_backlog(pipeline.bootstrap, events)
        drained = drain(pipeline, "ingest", EVENTS_IN, sent, seconds)
        report("measuring the bare consumer ceiling…")
        return IngestResult(drained.events, drained.measured, drained.seconds, drained.cpu_s,
                            bare_consumer_rate(pipeline.bootstrap, sent))
