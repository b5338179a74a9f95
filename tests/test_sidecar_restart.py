"""kill -9 the sidecar process during an open anomaly and restart it: exactly one annotation per
anomaly region and per incident results in Grafana (the API double), the region closed when the
anomaly ends."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from checkout import ROOT
from conftest import EndpointProcess
from shoppulse.ascode.dashboards.demo_data import DemoPlan
from shoppulse.bench.annotate import AggregateFeeder
from shoppulse.devstack.grafana_standin import grafana_standin
from shoppulse.devstack.process import ManagedProcess, free_port

pytestmark = pytest.mark.integration
TOKEN = "glsa_restart"


def feed_until(feeder: AggregateFeeder, condition: Callable[[], bool], timeout_s: float,
               outage_in: str | None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        feeder.feed(outage_in)
        if condition():
            return True
        time.sleep(0.2)
    return False


def incident_tag(annotation: dict) -> str:
    return next(t for t in annotation["tags"] if t.startswith("incident_id:"))


def test_a_killed_sidecar_leaves_exactly_one_region_closed_when_the_outage_ends(
        clickhouse_endpoint: EndpointProcess, tmp_path: Path) -> None:
    settings, client = clickhouse_endpoint.migrated("restart")
    now = datetime.now(UTC).replace(microsecond=0)
    feeder = AggregateFeeder(client, DemoPlan(now=now + timedelta(days=1), events_per_s=3000), now)
    feeder.preload(timedelta(minutes=32))
    with grafana_standin(TOKEN) as (url, grafana):
        grafana.provision(json.loads((ROOT / "grafana" / "dashboards" / "store-live.json").read_text()))
        env = {**os.environ, "CLICKHOUSE_URL": settings.clickhouse_http_url,
               "CLICKHOUSE_PASSWORD": settings.clickhouse_password,
               "SHOPPULSE_CLICKHOUSE_DATABASE": settings.clickhouse_database,
               "GRAFANA_URL": url, "GRAFANA_TOKEN": TOKEN,
               "SHOPPULSE_SIDECAR_METRICS_PORT": str(free_port())}

        def start_sidecar(name: str) -> ManagedProcess:
            process = ManagedProcess("sidecar", [sys.executable, "-m", "shoppulse", "sidecar",
                                                 "--warm-up-minutes", "30"], tmp_path / f"{name}.log", env=env)
            process.start()
            return process

        def outage_annotations() -> list[dict]:
            with grafana.lock:
                return [dict(a) for a in grafana.annotations.values()
                        if {"metric:payment_failure_rate", "country:DE"} <= set(a["tags"])]

        first = start_sidecar("first")
        try:
            assert feed_until(feeder, lambda: False, 15, None) is False  # quiet traffic for a while
            assert feed_until(feeder, lambda: bool(outage_annotations()), 60, "DE"), (
                (tmp_path / "first.log").read_text()[-2000:])
            assert outage_annotations()[0]["timeEnd"] == outage_annotations()[0]["time"]  # open
            os.kill(first.pid, signal.SIGKILL)
            assert first.popen is not None
            first.popen.wait(10)
        finally:
            first.stop()
        feed_until(feeder, lambda: False, 5, "DE")  # the outage goes on while nobody watches
        second = start_sidecar("second")
        try:
            assert feed_until(feeder, lambda: False, 20, "DE") is False
            assert feed_until(feeder, lambda: outage_annotations()[0]["timeEnd"] > outage_annotations()[0]["time"],
                              120, None), (tmp_path / "second.log").read_text()[-2000:]
        finally:
            second.stop()
        [annotation] = outage_annotations()
        anomaly_id = next(t.split(":", 1)[1] for t in annotation["tags"] if t.startswith("anomaly_id:"))
        closed = client.query("SELECT closed_at FROM anomalies FINAL WHERE anomaly_id = {id:UUID}",
                              parameters={"id": anomaly_id}).result_rows[0][0]
        assert annotation["timeEnd"] == int(closed.replace(tzinfo=UTC).timestamp() * 1000)
        per_item: dict[str, int] = {}  # each anomaly's annotation and each incident's
        for a in grafana.annotations.values():
            key = next(t for t in a["tags"] if t.startswith("anomaly_id:") or
                       ("incident" in a["tags"] and t.startswith("incident_id:")))
            per_item[key] = per_item.get(key, 0) + 1
        assert set(per_item.values()) == {1}, "an anomaly or an incident got two annotations"
        incidents = [k for k in per_item if k.startswith("incident_id:")]
        assert incidents and incident_tag(annotation) in incidents  # the outage's region is part of one
    client.close()
