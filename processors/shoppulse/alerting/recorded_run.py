"""A recorded run for ``shoppulse alerts replay``: the load generator's events with a scenario's
incidents, put through the pipeline's own code without Kafka — validation and cleaning as in
ingestion, the store-metrics aggregator and session tracker as in aggregation, the anomaly sidecar
on each step — and written to ClickHouse through clickhouse-connect, every row stamped with the
simulated time it would have been written at. The alert rules then read it like live data.

Two differences from a live run: a session's row is visible from its last event on (live, it
lands a session gap and grace later, ``SHOPPULSE_SESSION_GAP_MS``, so live abandonment alerts
trail a replay's by about that much); and ``anomalies`` keeps only the newest version of each
region once merged, so a replayed moment sees a region's final severity."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from shoppulse.aggregate.app import (
    LATENCY_COLUMNS,
    METRICS_COLUMNS,
    SESSION_COLUMNS,
    latency_row,
    latency_rows,
    metrics_row,
    session_row,
)
from shoppulse.aggregate.sessions import SESSION_EVENT_TYPES, SessionTracker
from shoppulse.aggregate.store_metrics import StoreMetrics
from shoppulse.events.clean import to_clean
from shoppulse.events.currency import load_rates
from shoppulse.events.pii import DEMO_KEY, PiiHasher
from shoppulse.events.validate import Rejection, validate
from shoppulse.ingest.app import DEAD_LETTER_COLUMNS, dead_letter_row
from shoppulse.loadgen.generator import BadInput, EventStream
from shoppulse.loadgen.scenario import ActiveIncident, Scenario, schedule
from shoppulse.sidecar.app import Sidecar
from shoppulse.sidecar.scoring import Second, windows_of

SESSION_GAP_MS, SESSION_GRACE_MS = 300_000, 10_000
FLUSH_EVERY_S = 60
SOURCE = [0, 0]  # src_partition, src_offset: one writer that never replays, no offset fence needed


class DictState:
    """The part of Quix's ``State`` the session tracker uses, over a dict (one country)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


@dataclass
class RecordedRun:
    begin: datetime  # the first event
    start: datetime  # the scenario's clock starts here (after the warm-up)
    end: datetime
    incidents: list[ActiveIncident]
    events: int = 0
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass
class _Buffers:
    tables: dict[str, list[list[Any]]] = field(default_factory=lambda: defaultdict(list))

    def flush(self, client: Client, run: RecordedRun) -> None:
        columns = {"metrics_1s": METRICS_COLUMNS, "payment_latency_1s": LATENCY_COLUMNS, "sessions": SESSION_COLUMNS,
                   "dead_letters": DEAD_LETTER_COLUMNS}
        for table, rows in self.tables.items():
            if rows:
                client.insert(table, [[*r, *SOURCE] for r in rows],
                              column_names=[*columns[table], "src_partition", "src_offset"])
                run.rows[table] += len(rows)
        self.tables.clear()


def record(client: Client, scenario: Scenario, rate: float, warm_up: timedelta, tail: timedelta,
           start: datetime, seed: int = 11, progress: Callable[[str], None] = lambda _: None) -> RecordedRun:
    """Generate ``warm_up`` of quiet traffic, then the scenario and ``tail`` after its last incident,
    into the migrated (empty) database behind ``client``."""
    incidents = schedule(scenario, start)
    end = max(i.end for i in incidents) + tail if incidents else start + tail
    run = RecordedRun(start - warm_up, start, end, incidents)
    stream = EventStream(rate, bad=BadInput(invalid=0.01), incidents=incidents, seed=seed)
    hasher, rates = PiiHasher(DEMO_KEY), load_rates()
    trackers: dict[str, DictState] = defaultdict(DictState)
    tracker = SessionTracker(SESSION_GAP_MS, SESSION_GRACE_MS)
    clock = [start - warm_up]
    sidecar = Sidecar(client, clock=lambda: clock[0])
    buffers = _Buffers()
    aggregator = StoreMetrics()
    recent: list[Second] = []
    begin, seconds = start - warm_up, int((end - start + warm_up).total_seconds())
    per_second = int(rate)
    for offset in range(seconds):
        now = begin + timedelta(seconds=offset)
        clock[0] = now + timedelta(seconds=1)
        windows: dict[str, dict[str, Any]] = {}
        for _ in range(per_second):
            emission = stream.next(now)
            run.events += 1
            checked = validate(emission.value, now)
            if isinstance(checked, Rejection):
                buffers.tables["dead_letters"].append(dead_letter_row({
                    "received_at_ms": int(now.timestamp() * 1000), "reason": str(checked.reason),
                    "detail": checked.detail, "size_bytes": len(emission.value),
                    "sha256": hashlib.sha256(emission.value).hexdigest()}))
                continue
            event = to_clean(checked, hasher, rates)
            country = event["country"]
            window = windows.get(country)
            if window is None:
                window = windows[country] = {"start": int(now.timestamp() * 1000), "country": country,
                                             "metrics": aggregator.initialize()}
            aggregator.agg(window["metrics"], event, event["event_time_ms"])
            if event["event_type"] in SESSION_EVENT_TYPES:
                for closed in tracker(event, trackers[country]):
                    buffers.tables["sessions"].append(session_row(closed))
        for window in windows.values():
            buffers.tables["metrics_1s"].append(metrics_row(window))
            buffers.tables["payment_latency_1s"] += [latency_row(r) for r in latency_rows(window)]
        recent.append(Second.of_windows(windows))
        del recent[:-sidecar.window_s]
        if (offset + 1) % FLUSH_EVERY_S == 0:
            buffers.flush(client, run)
        if (offset + 1) % sidecar.step_s == 0 and len(recent) >= sidecar.window_s:
            sidecar.score_windows(clock[0], windows_of(recent, sidecar.window_s))
        if (offset + 1) % 600 == 0:
            progress(f"recorded {(offset + 1) / 60:.0f} of {seconds / 60:.0f} minutes ({run.events:,} events)")
    buffers.flush(client, run)
    return run

