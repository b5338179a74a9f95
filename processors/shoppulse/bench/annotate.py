"""`shoppulse bench annotate`: from an anomaly's onset to its annotation in Grafana, end to end.

A ClickHouse endpoint and the ``shoppulse sidecar`` process run as in production; Grafana's HTTP
API is the local double that enforces its contract (no Grafana binary runs here). Half an hour of
steady per-second aggregates is preloaded for the sidecar's warm-up; then a feeder writes each new
second as the pipeline would (live sums a second after it ends, final ones after the aggregation's
grace and commit) and plays outages in one country after another: of its payments (every attempt
fails) or of the whole shop (it sends nothing). For each, the wall-clock time from the outage's first
second (the events) to the sidecar opening the anomaly region (its first ``anomalies`` row:
provisional when the fast path opened it on the live seconds), and from there to the annotation
existing in Grafana.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clickhouse_connect.driver.client import Client

from shoppulse import clickhouse
from shoppulse.ascode.dashboards.demo_data import METRIC_COLUMNS, DemoPlan, metric_rows
from shoppulse.devstack.grafana_standin import grafana_standin
from shoppulse.devstack.process import ManagedProcess, free_port
from shoppulse.devstack.scratch import scratch_clickhouse
from shoppulse.project_files import dashboards_dir
from shoppulse.settings import Settings
from shoppulse.sink.migrations import migrate

TOKEN = "glsa_bench_annotate"
PRELOAD = timedelta(minutes=35)
OUTAGE_S, GAP_S = 90, 60
FINAL_LAG_S = 5  # the aggregation's default grace (3 s) and commit interval (2 s)
COUNTRIES = ("DE", "US", "JP", "BR", "GB")


@dataclass(frozen=True)
class Timing:
    country: str
    event_to_region_s: float  # from the outage's first second to the region opening (provisional or final)
    detection_to_annotation_s: float  # from the region opening to its annotation in Grafana
    event_to_annotation_s: float
    provisional: bool  # opened by the fast path (on the live seconds), not by the final windows


ATTEMPTS, FAILURES, ORDERS, ITEMS, REVENUE = (METRIC_COLUMNS.index(c) for c in (
    "payment_attempts", "payment_failures", "orders", "items", "revenue"))


def fail_payments(row: list[object]) -> None:
    """A ``metric_rows`` row as a payment outage leaves it: every attempt fails, so no order, item or revenue."""
    row[FAILURES] = row[ATTEMPTS]
    row[ORDERS], row[ITEMS], row[REVENUE] = 0, 0, 0


@dataclass(frozen=True)
class Outage:
    """What an outage leaves of a country's per-second rows, and the metrics whose region shows it."""

    metrics: tuple[str, ...]
    payments_fail: bool  # every payment fails; otherwise the country sends nothing at all


OUTAGES = {"payments": Outage(("payment_failure_rate",), payments_fail=True),
           "silent": Outage(("views_per_s", "orders_per_s"), payments_fail=False)}


class AggregateFeeder:
    """Writes per-second store aggregates as the pipeline would, with an optional outage in one country:
    each second's live sums (``metrics_live``, as ingestion writes them) one second after it ends, its
    final row (``metrics_1s``) FINAL_LAG_S later (the aggregation's grace period and commit)."""

    def __init__(self, client: Client, plan: DemoPlan, start: datetime) -> None:
        self.client, self.plan, self.second, self.offset = client, plan, start, 0
        self._not_final: deque[tuple[datetime, list[list[object]]]] = deque()

    def preload(self, span: timedelta) -> None:
        history = metric_rows(self.plan, self.second - span, self.second, timedelta(seconds=1))
        self._insert("metrics_1s", history)

    def feed(self, outage_in: str | None = None, outage: Outage = OUTAGES["payments"]) -> int:
        """Every second that has ended since the last call; returns how many were written live."""
        written = 0
        now = datetime.now(UTC)
        while self.second <= now - timedelta(seconds=1):
            rows = metric_rows(replace(self.plan, seed=self.offset), self.second, self.second + timedelta(seconds=1),
                               timedelta(seconds=1))
            if outage.payments_fail:
                for row in rows:
                    if row[1] == outage_in:
                        fail_payments(row)
            else:
                rows = [row for row in rows if row[1] != outage_in]
            self._insert("metrics_live", rows)
            self._not_final.append((self.second, rows))
            self.second += timedelta(seconds=1)
            written += 1
        while self._not_final and self._not_final[0][0] <= now - timedelta(seconds=1 + FINAL_LAG_S):
            self._insert("metrics_1s", self._not_final.popleft()[1])
        return written

    def _insert(self, table: str, rows: list[list[object]]) -> None:
        self.client.insert(table, [[*r, 0, self.offset + i] for i, r in enumerate(rows)],
                           column_names=[*METRIC_COLUMNS, "src_partition", "src_offset"])
        self.offset += len(rows)


def measure(settings: Settings, outages: int, kind: str = "payments",
            report: Callable[[str], None] = lambda _: None) -> list[Timing]:
    outage = OUTAGES[kind]
    with tempfile.TemporaryDirectory(prefix="shoppulse-bench-annotate-") as folder, \
            scratch_clickhouse(settings, Path(folder)) as endpoint, grafana_standin(TOKEN) as (grafana_url, grafana):
        migrate(lambda db: clickhouse.connect(endpoint, db), endpoint.clickhouse_database, endpoint.migrations_dir)
        grafana.provision(json.loads((dashboards_dir() / "store-live.json").read_text()))  # as compose's Grafana
        client = clickhouse.connect(endpoint)
        now = datetime.now(UTC).replace(microsecond=0)
        plan = DemoPlan(now=now + timedelta(days=1), events_per_s=3000)  # its own incident lies far ahead
        report(f"preloading {PRELOAD.total_seconds() / 60:.0f} minutes of steady aggregates…")
        feeder = AggregateFeeder(client, plan, now)
        feeder.preload(PRELOAD)
        env = {**os.environ, "CLICKHOUSE_URL": endpoint.clickhouse_http_url, "CLICKHOUSE_PASSWORD": "",
               "GRAFANA_URL": grafana_url, "GRAFANA_TOKEN": TOKEN,
               "SHOPPULSE_SIDECAR_METRICS_PORT": str(free_port())}
        sidecar = ManagedProcess("sidecar", [sys.executable, "-m", "shoppulse", "sidecar", "--warm-up-minutes", "30"],
                                 Path(folder) / "sidecar.log", env=env)
        sidecar.start()
        timings: list[Timing] = []
        try:
            schedule = [(COUNTRIES[i % len(COUNTRIES)], 60 + i * (OUTAGE_S + GAP_S)) for i in range(outages)]
            started = time.monotonic()
            outage_began: dict[int, datetime] = {}  # by the outage's place in the schedule
            annotated: dict[int, float] = {}
            total_s = schedule[-1][1] + OUTAGE_S + 60
            while time.monotonic() - started < total_s:
                elapsed = int(time.monotonic() - started)
                active = next((i for i, (_, at) in enumerate(schedule) if at <= elapsed < at + OUTAGE_S), None)
                first_second = feeder.second
                if feeder.feed(schedule[active][0] if active is not None else None, outage) and active is not None \
                        and active not in outage_began:
                    outage_began[active] = first_second
                    report(f"outage in {schedule[active][0]} begins")
                with grafana.lock:
                    created = [(set(a["tags"]), a["created"] / 1000) for a in grafana.annotations.values()]
                for index, began in outage_began.items():
                    found = [at for tags, at in created if f"country:{schedule[index][0]}" in tags
                             and tags & {f"metric:{m}" for m in outage.metrics} and at >= began.timestamp()]
                    if index not in annotated and found:
                        annotated[index] = min(found)
                        report(f"annotation for {schedule[index][0]} in Grafana")
                time.sleep(0.05)
            for index, seen in sorted(annotated.items()):
                country, began = schedule[index][0], outage_began[index]
                detected, detectors = client.query(
                    "SELECT toUnixTimestamp64Milli(detected_at), detectors FROM anomalies FINAL "
                    "WHERE metric IN {metrics:Array(String)} AND country = {c:String} AND status != 'withdrawn' "
                    "AND detected_at >= {began:DateTime64(3)} ORDER BY detected_at LIMIT 1",
                    parameters={"metrics": list(outage.metrics), "c": country,
                                "began": began.replace(tzinfo=None)}).result_rows[0]
                timings.append(Timing(country, int(detected) / 1000 - began.timestamp(),
                                      seen - int(detected) / 1000, seen - began.timestamp(), "fast_path" in detectors))
        finally:
            sidecar.stop()
            client.close()
        missing = [c for i, (c, _) in enumerate(schedule) if i not in annotated]
        if missing:
            raise RuntimeError(f"no annotation for the outage in {', '.join(missing)}: see the sidecar's log")
        return timings

