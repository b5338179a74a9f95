"""``shoppulse sidecar``: the detection loop plus the Grafana annotation syncer, with Prometheus metrics."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path

from shoppulse import clickhouse
from shoppulse.grafana_api import GrafanaClient, can_authenticate
from shoppulse.redact import redact_url
from shoppulse.settings import Settings
from shoppulse.sidecar.annotations import AnnotationSyncer
from shoppulse.sidecar.app import INSIGHT_COLUMNS
from shoppulse.sidecar.app import run as detect
from shoppulse.sidecar.event_calendar import calendar_path, load_calendar
from shoppulse.sidecar.reviewed_file import FileWatch, ReviewedFileError
from shoppulse.sidecar.rewording import Rewording
from shoppulse.sidecar.sensitivity import load_sensitivity, sensitivity_path
from shoppulse.streaming import ProcessorStartError, serve_metrics

log = logging.getLogger(__name__)


def run(settings: Settings, stop: threading.Event, warm_up: timedelta = timedelta(minutes=30),
        calendar: Path | None = None) -> None:
    """``calendar``: the known events' file (default: detection/calendar.yaml of the as-code home)."""
    sensitivity = FileWatch(sensitivity_path(), load_sensitivity)
    known_events = FileWatch(calendar or calendar_path(), load_calendar)
    try:  # a reviewed file that cannot be used stops the sidecar before it starts anything
        sensitivity.current()
        known_events.current()
    except ReviewedFileError as exc:
        raise ProcessorStartError(str(exc)) from exc
    if settings.openai_api_key:  # the LLM client is an extra: say so before anything starts
        try:
            from shoppulse.sidecar.llm import InsightWriter
        except ModuleNotFoundError as exc:
            raise ProcessorStartError(f"OPENAI_API_KEY is set but the OpenAI client is not installed ({exc.name}): "
                                      "pip install 'shoppulse[llm]', or unset OPENAI_API_KEY for template "
                                      "insights") from exc
    serve_metrics(settings.sidecar_metrics_port, settings.host, "SHOPPULSE_SIDECAR_METRICS_PORT")
    syncer = None
    if settings.grafana_url and can_authenticate(settings.grafana_url, settings.grafana_token):
        syncer = AnnotationSyncer(lambda: clickhouse.connect(settings),
                                  GrafanaClient(settings.grafana_url, settings.grafana_token,
                                                settings.grafana_timeout_s))
        syncer.start()
    else:
        log.warning("GRAFANA_URL or GRAFANA_TOKEN is not set: anomalies go to ClickHouse only, no Grafana "
                    "annotations (create a service account with annotations:create, annotations:write, "
                    "annotations:read and dashboards:read, and export its token as GRAFANA_TOKEN)")
    log.info("sidecar starting", extra={"metrics_port": settings.sidecar_metrics_port,
                                        "grafana": redact_url(settings.grafana_url or "-"),
                                        "insights": f"llm {settings.llm_model}" if settings.openai_api_key
                                        else "template"})
    client = clickhouse.connect(settings)
    rewording = None
    if settings.openai_api_key:
        writer = InsightWriter(clickhouse.connect(settings), settings.openai_api_key, settings.llm_model,
                               settings.llm_daily_budget_usd, settings.llm_timeout_s, settings.llm_max_retries,
                               settings.openai_base_url)
        rewording = Rewording(writer, clickhouse.connect(settings), INSIGHT_COLUMNS)
    try:
        detect(client, stop.is_set, syncer.wake if syncer else (lambda: None), warm_up,
               explain=rewording.submit if rewording else None,
               sensitivity=sensitivity, calendar=known_events,
               connect=lambda: clickhouse.connect(settings))
    finally:
        if syncer:
            syncer.stop()
        if rewording:
            rewording.shutdown()
        client.close()
