"""Prometheus panel queries run against a real Prometheus (the one `shoppulse up` starts), for
previews drawn from a running stack: each series of a range query becomes one drawable result."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import requests

from shoppulse.ascode.dashboards.queries import Executed, panel_context
from shoppulse.grafana.interpolate import prometheus_query
from shoppulse.grafana.model import PROMETHEUS_TYPE, DashboardFile, provisioned_datasources
from shoppulse.grafana.shapes import Result

TIMEOUT_S = 10.0
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class PrometheusError(RuntimeError):
    """Prometheus refused a query or could not be reached."""


def legend(target: dict[str, Any], labels: dict[str, str]) -> str:
    """The series name Grafana shows: the target's legendFormat with {{label}} filled in."""
    fmt = str(target.get("legendFormat") or "")
    if fmt and fmt != "__auto":
        return _LEGEND.sub(lambda m: labels.get(m.group(1), ""), fmt)
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or str(target.get("refId"))


def query_range(url: str, expression: str, start: datetime, end: datetime, step_s: float) -> list[dict[str, Any]]:
    params: dict[str, str | float] = {"query": expression, "start": start.timestamp(), "end": end.timestamp(),
                                      "step": max(step_s, 1)}
    try:
        response = requests.get(f"{url.rstrip('/')}/api/v1/query_range", timeout=TIMEOUT_S, params=params)
        body = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise PrometheusError(f"Prometheus at {url} did not answer a range query: {exc}") from exc
    if body.get("status") != "success":
        raise PrometheusError(f"Prometheus refused {expression!r}: {body.get('error', response.status_code)}")
    return list(body["data"]["result"])


def prometheus_results(file: DashboardFile, url: str, now: datetime) -> list[Executed]:
    """Every Prometheus target of the dashboard run over its panel's time range, one result per series."""
    found: list[Executed] = []
    datasources = provisioned_datasources()
    for panel in file.panels():
        for target in panel.get("targets") or []:
            datasource = target.get("datasource") or panel.get("datasource") or {}
            if datasource.get("type") != PROMETHEUS_TYPE or not target.get("expr"):
                continue
            context = panel_context(file.model.get("time"), panel, now, {}, datasources.get(str(datasource.get("uid"))))
            expression = prometheus_query(str(target["expr"]), context)
            started = time.perf_counter()
            for series in query_range(url, expression, context.time_from, context.time_to,
                                      max(context.interval_ms / 1000, 5)):
                rows = [(datetime.fromtimestamp(float(t), UTC), float(v)) for t, v in series.get("values", [])]
                result = Result(["time", legend(target, series.get("metric", {}))], ["DateTime", "Float64"], rows)
                found.append(Executed(file, panel, target, expression, result, time.perf_counter() - started))
    return found
