"""`shoppulse bench backtest`: how long ``shoppulse backtest`` takes per day of history.

A scratch ClickHouse (unless CLICKHOUSE_URL names one) is filled with the dashboards' demo history at
the local stack's load — per-second store metrics, payment latencies, campaign and refund segments,
its DE payment outage — and the backtest replays the last ``hours`` of it for the default grid, as
the command does. The figure to watch is minutes per day of history: the seeds ask for two weeks.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shoppulse import clickhouse
from shoppulse.ascode.dashboards.demo_data import DemoPlan, load_demo_data
from shoppulse.ascode.detection.backtest import DEFAULT_GRID, Label, backtest
from shoppulse.devstack.scratch import scratch_clickhouse
from shoppulse.settings import Settings
from shoppulse.sidecar.app import STEP_S
from shoppulse.sidecar.sensitivity import Sensitivity
from shoppulse.sidecar.signals import METRICS
from shoppulse.sink.migrations import migrate

WARM_UP = timedelta(minutes=15)


@dataclass(frozen=True)
class BacktestTiming:
    history: timedelta  # replayed, the warm-up included
    steps: int
    step_s: int
    candidates: int
    load_s: float
    replay_s: float

    @property
    def minutes_per_day(self) -> float:
        return self.replay_s / 60 / (self.history / timedelta(days=1))

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.replay_s if self.replay_s else 0.0


def measure(settings: Settings, hours: float, report: Callable[[str], None] = lambda _: None) -> BacktestTiming:
    history = timedelta(hours=hours)
    now = datetime.now(UTC).replace(microsecond=0)
    plan = DemoPlan(now=now, seconds_history=history + timedelta(minutes=5))
    database = f"bench_backtest_{secrets.token_hex(4)}"  # its own, dropped after: never a database in use
    with tempfile.TemporaryDirectory(prefix="shoppulse-bench-backtest-") as folder, \
            scratch_clickhouse(settings, Path(folder)) as endpoint:
        migrate(lambda db: clickhouse.connect(endpoint, db), database, endpoint.migrations_dir)
        client = clickhouse.connect(endpoint, database)
        try:
            began = time.perf_counter()
            report(f"loading {hours:g} h of demo history…")
            load_demo_data(client, plan, report)
            loaded = time.perf_counter()
            incident = plan.incident
            labels = [Label(incident.start, incident.end, frozenset({incident.country}), frozenset(METRICS))]
            report("replaying…")
            backtest(client, (history - WARM_UP) / timedelta(days=1), labels, Sensitivity(), DEFAULT_GRID,
                     warm_up=WARM_UP,
                     progress=lambda done, total: report(f"replayed {done:,} of {total:,} steps"))
            replayed = time.perf_counter()
        finally:
            client.command(f"DROP DATABASE IF EXISTS {database}")
            client.close()
    return BacktestTiming(history, int(history.total_seconds()) // STEP_S, STEP_S, len(DEFAULT_GRID), loaded - began,
                          replayed - loaded)
