"""``shoppulse sidecar``: the detection loop plus the Grafana annotation syncer, with Prometheus metrics."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from prometheus_client import start_http_server

from shoppulse import clickhouse
from shoppulse.grafana_api import GrafanaClient
from shoppulse.settings import Settings
from shoppulse.sidecar.annotations import AnnotationSyncer
from shoppulse.sidecar.app import run as detect

log = logging.getLogger(__name__)


def run(settings: Settings, stop: threading.Event, warm_up: timedelta = timedelta(minutes=30)) -> None:
    start_http_server(settings.sidecar_metrics_port, addr=settings.host)
    syncer = None
    if settings.grafana_url:
        syncer = AnnotationSyncer(lambda: clickhouse.connect(settings),
                                  GrafanaClient(settings.grafana_url, settings.grafana_token))
        syncer.start()
    else:
        log.warning("GRAFANA_URL is not set: anomalies go to ClickHouse only, no Grafana annotations")
    log.info("sidecar starting", extra={"metrics_port": settings.sidecar_metrics_port,
                                        "grafana": settings.grafana_url or "-"})
    client = clickhouse.connect(settings)
    try:
        detect(client, stop.is_set, syncer.wake if syncer else (lambda: None), warm_up)
    finally:
        if syncer:
            syncer.stop()
        client.close()
