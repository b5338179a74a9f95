"""A recorded run for ``shoppulse alerts replay`` and ``shoppulse score``, through the real pipeline:
the load generator's events with a scenario's incidents are backfilled into a throwaway pipeline's
raw topic (a Kafka broker; ``shoppulse ingest``, ``shoppulse aggregate`` and ``shoppulse sidecar``
as processes; a ClickHouse endpoint), each message stamped with its simulated time, as fast as the
pipeline takes them and in one partition, so that they are read in the order they were generated.
The run is recorded once the sidecar has scored every step up to its end; the alert rules then
read the database like live data.

Two differences from watching it live: a rule sees a row by its event time, so a session counts
from its last event on (live, it lands a session gap and grace later, ``SHOPPULSE_SESSION_GAP_MS``,
so live abandonment alerts trail a replay's by about that much); and ``anomalies`` keeps only the
newest version of each region once merged, so a replayed moment sees a region's final severity."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clickhouse_connect.driver.client import Client

from shoppulse import clickhouse
from shoppulse.devstack.process import wait_until
from shoppulse.devstack.scratch import ScratchPipeline, scratch_pipeline
from shoppulse.devstack.stack import http_ok
from shoppulse.loadgen.generator import BadInput, EventStream, LostOrder
from shoppulse.loadgen.phenomena import ActivePhenomenon, announced_calendar, schedule_phenomena
from shoppulse.loadgen.run import make_producer, run_replay
from shoppulse.loadgen.scenario import ActiveIncident, Scenario, schedule
from shoppulse.settings import Settings

PAST_THE_END = timedelta(minutes=2)  # traffic after the run, so that its last windows, sessions and steps close
INVALID_RATIO = 0.01  # some dead letters, as live traffic has
STALL_TIMEOUT_S = 180.0  # the sidecar scored nothing new for this long: the run is stuck
LAST_STEP_METRIC = "shoppulse_sidecar_last_step_seconds"


class RecordingError(RuntimeError):
    """The pipeline did not get through the recorded run."""


@dataclass
class RecordedRun:
    begin: datetime  # the first event
    start: datetime  # the scenario's clock starts here (after the warm-up)
    end: datetime  # the replay evaluates up to here
    incidents: list[ActiveIncident]
    phenomena: list[ActivePhenomenon] = field(default_factory=list)
    events: int = 0
    lost_orders: list[LostOrder] = field(default_factory=list)  # the generator's ground truth of lost orders


def recent_start(scenario: Scenario | None, tail: timedelta, now: datetime) -> datetime:
    """Where a run's scenario starts in event time: as late as lets its last event lie before ``now``
    (on a whole minute), so every event is hours old at most — well inside the topics' retention, the
    tables' TTL and ingestion's event-age bound, whatever the day it runs."""
    length = scenario.length if scenario else timedelta(0)
    latest = now - length - tail - PAST_THE_END - timedelta(minutes=1)
    return latest.replace(second=0, microsecond=0)


@contextlib.contextmanager
def recorded_run(settings: Settings, scenario: Scenario | None, rate: float, warm_up: timedelta, tail: timedelta,
                 plays: datetime, seed: int = 11,
                 progress: Callable[[str], None] = lambda _: None) -> Iterator[tuple[RecordedRun, Client]]:
    """``warm_up`` of quiet traffic, then ``scenario`` and ``tail`` after its last incident (without a
    scenario: ``tail``), through a throwaway pipeline; yields the run and a client of its database.
    The events are stamped in the last hours (``recent_start``) and the traffic is that of the
    markets' week from ``plays`` on (the scenario starts at that time of the week), so every run of
    a scenario sees the same traffic."""
    start = recent_start(scenario, tail, datetime.now(UTC))
    incidents = schedule(scenario, start) if scenario else []
    phenomena = schedule_phenomena(scenario.phenomena, start) if scenario else []
    end = start + (scenario.length if scenario else timedelta(0)) + tail
    run = RecordedRun(start - warm_up, start, end, incidents, phenomena)
    # The sidecar starts cold, as on a fresh install: it scores from the first final step it sees.
    # One partition per topic: sent faster than real time, events read from several partitions would
    # interleave minutes of event time apart and most would be late for their windows.
    # The announced holidays and campaigns are in the calendar the sidecar reads, as a team lists its own.
    with tempfile.TemporaryDirectory(prefix="shoppulse-calendar-") as folder, scratch_pipeline(
            settings, ("ingest", "aggregate", "sidecar"),
            {"sidecar": ["--warm-up-minutes", "0", "--calendar", _calendar_file(Path(folder), phenomena)]},
            partitions=1, report=progress) as pipeline:
        sidecar_metrics = pipeline.metrics_urls["sidecar"]
        wait_until(lambda: http_ok(sidecar_metrics), 60, "the sidecar", alive=pipeline.processes["sidecar"].is_running)
        stream = EventStream(rate, incidents=incidents, bad=BadInput(invalid=INVALID_RATIO), seed=seed,
                             traffic_shift=plays - start, phenomena=phenomena, seasonal=True)
        run.events = run_replay(make_producer(pipeline.bootstrap), stream, rate, run.begin, end + PAST_THE_END,
                                report=lambda done, sent: progress(f"sending the run: {done:.0%}, {sent:,} events"))
        run.lost_orders = stream.lost_orders
        _wait_scored(pipeline, end, progress)
        client = clickhouse.connect(pipeline.settings)
        try:
            yield run, client
        finally:
            client.close()


def _calendar_file(folder: Path, phenomena: list[ActivePhenomenon]) -> str:
    path = folder / "calendar.yaml"
    path.write_text(announced_calendar(phenomena).as_yaml(), encoding="utf-8")
    return str(path)


def _wait_scored(pipeline: ScratchPipeline, end: datetime, progress: Callable[[str], None]) -> None:
    """Until the sidecar has scored up to ``end``; fails when a process dies or nothing moves."""
    last, moved_at = None, time.monotonic()
    while True:
        pipeline.check_alive()
        step = pipeline.metric("sidecar", LAST_STEP_METRIC) or None  # 0 until the first step
        if step is not None and step >= end.timestamp():
            return
        if step != last:
            last, moved_at = step, time.monotonic()
            if step is not None:
                progress(f"pipeline and sidecar at {datetime.fromtimestamp(step, UTC):%H:%M} of the run "
                         f"(ends {end:%H:%M})")
        elif time.monotonic() - moved_at > STALL_TIMEOUT_S:
            raise RecordingError(f"the sidecar scored nothing for {STALL_TIMEOUT_S:.0f} s (at "
                                 f"{'nothing yet' if last is None else datetime.fromtimestamp(last, UTC)}, the run "
                                 f"ends {end}); the processors' logs end with:\n{pipeline.log_tails()}")
        time.sleep(1)
