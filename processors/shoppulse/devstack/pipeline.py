"""The pipeline processes `shoppulse up` runs beside the infrastructure, and the numbers its view shows."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from shoppulse.devstack.stack import ProcessorSpec
from shoppulse.project_files import scenarios_dir
from shoppulse.settings import Settings

DEFAULT_RATE = 300.0


def default_scenario() -> Path:
    return scenarios_dir() / "default.yaml"


def pipeline_processors(settings: Settings, loadgen_rate: float | None = DEFAULT_RATE,
                        scenario: Path | None = None) -> list[ProcessorSpec]:
    """Ingestion, aggregation, the anomaly sidecar, the actions processor (the shipped policies are dry
    runs), and the load generator unless ``loadgen_rate`` is None. Without a PII key the local stack
    runs in demo mode, which hashes with a built-in key."""
    env = {} if settings.pii_key else {"SHOPPULSE_DEMO": "1"}
    address = f"{settings.host}:{settings.ingest_metrics_port}"
    aggregate_address = f"{settings.host}:{settings.aggregate_metrics_port}"
    sidecar_address = f"{settings.host}:{settings.sidecar_metrics_port}"
    actions_address = f"{settings.host}:{settings.actions_metrics_port}"
    specs = [ProcessorSpec("ingest", [sys.executable, "-m", "shoppulse", "ingest"], address,
                           f"http://{address}/metrics", env),
             ProcessorSpec("aggregate", [sys.executable, "-m", "shoppulse", "aggregate"], aggregate_address,
                           f"http://{aggregate_address}/metrics"),
             ProcessorSpec("sidecar", [sys.executable, "-m", "shoppulse", "sidecar"], sidecar_address,
                           f"http://{sidecar_address}/metrics"),
             ProcessorSpec("actions", [sys.executable, "-m", "shoppulse", "actions", "run"], actions_address,
                           f"http://{actions_address}/metrics")]
    if loadgen_rate is not None:
        argv = [sys.executable, "-m", "shoppulse", "loadgen", "--rate", str(loadgen_rate),
                "--ground-truth", str(settings.data_dir.resolve() / "ground_truth.jsonl"),
                "--invalid-ratio", "0.002", "--duplicate-ratio", "0.002", "--out-of-order-ratio", "0.01",
                "--late-ratio", "0.001"]
        if scenario is not None:
            argv += ["--scenario", str(scenario)]
        specs.append(ProcessorSpec("loadgen", argv, f"{loadgen_rate:g} events/s"))
    return specs


STORE_QUERY = """
SELECT country,
       sumIf(orders, ts >= now() - 60) / 60 AS orders_per_s,
       sumIf(revenue, ts >= now() - 60) AS revenue_per_min,
       (SELECT max(watermark) FROM freshness WHERE source = 'metrics_1s') AS watermark
FROM metrics_1s
WHERE ts >= now() - 120
GROUP BY country
ORDER BY country
"""
SESSIONS_QUERY = """
SELECT country, sum(converted) / greatest(sum(sessions), 1) AS conversion,
       sum(abandoned) / greatest(sum(with_cart), 1) AS abandonment
FROM sessions_1m
WHERE ts >= now() - 900
GROUP BY country
"""
INSIGHTS_QUERY = """
SELECT created_at, severity, text
FROM insights FINAL
ORDER BY created_at DESC
LIMIT 3
"""


@dataclass
class StoreKpis:
    """Per-country orders/s and revenue/min over the last minute, conversion and abandonment over
    the last 15 minutes of closed sessions, and the freshness watermark — read from ClickHouse."""

    rows: list[tuple[str, float, float, float | None, float | None]] = field(default_factory=list)
    insights: list[tuple[Any, str, str]] = field(default_factory=list)  # newest first: (time, severity, text)
    watermark: Any = None
    error: str = ""

    def refresh(self, client: Any) -> None:
        try:
            store = client.query(STORE_QUERY).result_rows
            sessions = {c: (conv, ab) for c, conv, ab in client.query(SESSIONS_QUERY).result_rows}
            self.insights = [(t, str(sev), str(text)) for t, sev, text in client.query(INSIGHTS_QUERY).result_rows]
        except Exception as exc:  # ClickHouse down: keep the last numbers, say why
            self.error = str(exc).splitlines()[0][:120]
            return
        self.error = ""
        self.rows = [(c, float(o), float(r), *sessions.get(c, (None, None))) for c, o, r, _w in store]
        self.watermark = store[0][3] if store else None


@dataclass
class IngestRates:
    """Events/s in and out and dead letters by reason, from the ingestion processor's metrics."""

    url: str
    in_per_s: float = 0.0
    out_per_s: float = 0.0
    duplicates_per_s: float = 0.0
    dead_letters: dict[str, float] = field(default_factory=dict)  # reason -> total
    dead_per_s: float = 0.0
    _last: tuple[float, dict[str, float]] | None = None

    def refresh(self) -> None:
        try:
            text = requests.get(self.url, timeout=1).text
        except requests.RequestException:
            return
        totals: dict[str, float] = {}
        dead: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                if sample.name == "shoppulse_ingest_dead_letters_total":
                    dead[sample.labels["reason"]] = sample.value
                else:
                    totals[sample.name] = sample.value
        totals["dead"] = sum(dead.values())
        now = time.monotonic()
        if self._last is not None:
            seconds = max(now - self._last[0], 1e-6)
            before = self._last[1]

            def rate(name: str) -> float:
                return max(0.0, (totals.get(name, 0.0) - before.get(name, 0.0)) / seconds)

            self.in_per_s = rate("shoppulse_ingest_events_in_total")
            self.out_per_s = rate("shoppulse_ingest_events_out_total")
            self.duplicates_per_s = rate("shoppulse_ingest_duplicates_total")
            self.dead_per_s = rate("dead")
        self.dead_letters = dead
        self._last = (now, totals)
