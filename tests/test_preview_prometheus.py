"""Previews draw Prometheus panels from a real Prometheus (Debian's, as `shoppulse up` runs it):
a panel's PromQL, with Grafana's variables expanded, is run as a range query and each series is
named by the target's legend."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter, start_http_server

from shoppulse.ascode.dashboards.prometheus_data import PrometheusError, legend, prometheus_results
from shoppulse.devstack.process import free_port, wait_until
from shoppulse.devstack.prometheus import prometheus_process
from shoppulse.grafana.model import load
from shoppulse.project_files import dashboards_dir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is installed by ./dev"
    registry = CollectorRegistry()
    events_in = Counter("shoppulse_ingest_events_in", "Events read", registry=registry)
    exporter_port = free_port()
    server, thread = start_http_server(exporter_port, addr="127.0.0.1", registry=registry)
    port = free_port()
    process = prometheus_process(binary, tmp_path_factory.mktemp("prometheus"), "127.0.0.1", port,
                                 {"shoppulse-ingest": f"127.0.0.1:{exporter_port}"})
    process.start()
    url = f"http://127.0.0.1:{port}"
    try:
        def has_a_rate() -> bool:
            events_in.inc(500)
            query = {"query": "rate(shoppulse_ingest_events_in_total[1m])"}
            body = requests.get(f"{url}/api/v1/query", params=query, timeout=2).json()
            return bool(body.get("data", {}).get("result"))

        def ready() -> bool:
            try:
                return requests.get(f"{url}/-/ready", timeout=1).ok
            except requests.ConnectionError:
                return False

        wait_until(ready, 30, "Prometheus ready")
        wait_until(has_a_rate, 60, "two scrapes of the exporter")
        yield url
    finally:
        process.stop()
        server.shutdown()
        thread.join(5)


def test_pipeline_health_panels_are_drawn_from_prometheus_series(prometheus: str) -> None:
    file = load(dashboards_dir() / "pipeline-health.json")
    assert not isinstance(file, Exception)
    results = prometheus_results(file, prometheus, datetime.now(UTC))
    events = [e for e in results if e.panel.get("title") == "Events in / out per second"]
    series = {e.result.columns[1]: e.result for e in events}
    assert "in" in series, series.keys()  # legendFormat "in"
    assert any(value > 0 for _, value in series["in"].rows)
    # Grafana's $__rate_interval: 1 h over a 960 px panel is a 5 s interval; the datasource scrapes every 5 s
    assert "$__rate_interval" not in events[0].sql and "[20s]" in events[0].sql


def test_legend_fills_labels_like_grafana() -> None:
    target = {"refId": "A", "legendFormat": "{{reason}} on {{ job }}"}
    assert legend(target, {"reason": "bad_json", "job": "shoppulse-ingest"}) == "bad_json on shoppulse-ingest"
    assert legend({"refId": "B"}, {"__name__": "up", "job": "x"}) == "job=x"


def test_a_prometheus_that_is_not_there_is_a_clear_error(tmp_path: Path) -> None:
    file = load(dashboards_dir() / "pipeline-health.json")
    with pytest.raises(PrometheusError, match="did not answer"):
        prometheus_results(file, f"http://127.0.0.1:{free_port()}", datetime.now(UTC))
