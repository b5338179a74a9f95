"""`shoppulse bench annotate`: from an anomaly's onset to its annotation in Grafana, end to end.

A ClickHouse endpoint and the ``shoppulse sidecar`` process run as in production; Grafana's HTTP
API is the local double that enforces its contract (no Grafana binary runs here). Half an hour of
steady per-second aggregates is preloaded for the sidecar's warm-up; then a feeder writes each new
second as the aggregation would, and plays payment outages in one country after another. For each,
the wall-clock time from (a) the first outage second becoming queryable and (b) the sidecar opening
the anomaly region (its first ``anomalies`` row) to (c) the annotation existing in Grafana.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
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
OUTAGE_S, GAP_S = 90, 150
COUNTRIES = ("DE", "US", "JP", "BR", "GB")


@dataclass(frozen=True)
class Timing:
    country: str
    queryable_to_annotation_s: float
    detection_to_annotation_s: float


class AggregateFeeder:
    """Writes per-second store aggregates into ``metrics_1s`` as the aggregation would, one second
    after each second ends, with an optional payment outage in one country."""

    def __init__(self, client: Client, plan: DemoPlan, start: datetime) -> None:
        self.client, self.plan, self.second, self.offset = client, plan, start, 0

    def preload(self, span: timedelta) -> None:
        history = metric_rows(self.plan, self.second - span, self.second, timedelta(seconds=1))
        self._insert(history)

    def feed(self, outage_in: str | None = None) -> int:
        """Every second that has ended since the last call; returns how many were written."""
        written = 0
        while self.second <= datetime.now(UTC) - timedelta(seconds=1):
            rows = metric_rows(replace(self.plan, seed=self.offset), self.second, self.second + timedelta(seconds=1),
                               timedelta(seconds=1))
            for row in rows:
                if row[1] == outage_in:
                    row[7] = row[6]  # every payment attempt fails
                    row[8], row[9], row[10] = 0, 0, 0  # so no order, no item, no revenue
            self._insert(rows)
            self.second += timedelta(seconds=1)
            written += 1
        return written

    def _insert(self, rows: list[list[object]]) -> None:
        self.client.insert("metrics_1s", [[*r, 0, self.offset + i] for i, r in enumerate(rows)],
                           column_names=[*METRIC_COLUMNS, "src_partition", "src_offset"])
        self.offset += len(rows)


def measure(settings: Settings, outages: int, report: Callable[[str], None] = lambda _: None) -> list[Timing]:
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
            outage_written: dict[str, float] = {}
            annotated: dict[str, float] = {}
            total_s = schedule[-1][1] + OUTAGE_S + 60
            while time.monotonic() - started < total_s:
                elapsed = int(time.monotonic() - started)
                active = next((c for c, at in schedule if at <= elapsed < at + OUTAGE_S), None)
                if feeder.feed(active) and active and active not in outage_written:
                    outage_written[active] = time.time()
                    report(f"outage in {active} begins")
                with grafana.lock:
                    created = [(set(a["tags"]), a["created"] / 1000) for a in grafana.annotations.values()]
                for country in outage_written:
                    wanted = {"metric:payment_failure_rate", f"country:{country}"}
                    found = [at for tags, at in created if wanted <= tags]
                    if country not in annotated and found:
                        annotated[country] = min(found)
                        report(f"annotation for {country} in Grafana")
                time.sleep(0.05)
            for country, seen in annotated.items():
                detected = client.query(
                    "SELECT toUnixTimestamp64Milli(min(detected_at)) FROM anomalies "
                    "WHERE metric = 'payment_failure_rate' AND country = {c:String}",
                    parameters={"c": country}).result_rows[0][0]
                timings.append(Timing(country, seen - outage_written[country], seen - int(detected) / 1000))
        finally:
            sidecar.stop()
            client.close()
        missing = [c for c, _ in schedule if c not in {t.country for t in timings}]
        if missing:
            raise RuntimeError(f"no annotation for the outage in {', '.join(missing)}: see the sidecar's log")
        return timings

