"""`shoppulse bench aggregate`: the aggregation alone draining a backlog of clean events — windows,
sessions and the ClickHouse sink without ingestion beside it — measured from its own event counter
once it is past its start-up. The backlog is what ingestion would have written: generated events,
validated and cleaned in this process, on the clean topic keyed by country and stamped with their
event time."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from shoppulse.bench.drain import DrainResult, drain
from shoppulse.bench.ingest import backlog_end
from shoppulse.devstack.scratch import scratch_pipeline
from shoppulse.events.clean import to_clean
from shoppulse.events.currency import load_rates
from shoppulse.events.pii import PiiHasher
from shoppulse.events.validate import Rejection, validate
from shoppulse.loadgen.generator import BadInput, EventStream
from shoppulse.loadgen.run import make_producer
from shoppulse.settings import Settings
from shoppulse.topics import CLEAN_EVENTS

EVENTS_IN = "shoppulse_aggregate_events_total"
BACKLOG_RATE = 5000.0  # events per second of event time, as in `shoppulse bench pipeline`
POLL_EVERY = 1000


def send_clean_backlog(bootstrap: str, events: int, end: datetime) -> int:
    """``events`` clean events (1 % out of order, 0.1 % late) at BACKLOG_RATE per second of event
    time up to ``end``, as ingestion writes them; returns how many were sent."""
    stream = EventStream(BACKLOG_RATE, bad=BadInput(out_of_order=0.01, late=0.001), seed=1)
    hasher, rates = PiiHasher(secrets.token_bytes(16)), load_rates()
    producer = make_producer(bootstrap)
    start = end - timedelta(seconds=events / BACKLOG_RATE)
    for i in range(events):
        now = start + timedelta(seconds=i / BACKLOG_RATE)
        event = validate(stream.next(now).value, end)
        if isinstance(event, Rejection):
            raise AssertionError(f"the generator made an invalid event: {event}")
        clean = to_clean(event, hasher, rates)
        producer.produce(CLEAN_EVENTS.name, json.dumps(clean, separators=(",", ":")).encode(),
                         clean["country"].encode(), timestamp=clean["event_time_ms"])
        if i % POLL_EVERY == 0:
            producer.poll(0)
    producer.flush()
    return events


def measure(settings: Settings, events: int, seconds: float,
            report: Callable[[str], None] = lambda _: None) -> DrainResult:
    """The aggregation's rate over ``seconds`` while it drains a backlog of ``events`` clean events,
    sent before it starts."""
    with scratch_pipeline(settings, ("aggregate",), report=report, start=False) as pipeline:
        report(f"sending a backlog of {events:,} clean events")
        sent = send_clean_backlog(pipeline.bootstrap, events, backlog_end())
        report("starting the aggregation")
        pipeline.start()

        return drain(pipeline, "aggregate", EVENTS_IN, sent, seconds)
