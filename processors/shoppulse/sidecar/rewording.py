"""The model's rewording of insights, off the detection thread, never older than the template it replaces.

An incident's insight is one row (one id) replaced as the incident grows: each new version is written
as the template's wording at once and handed to the model. A rewording is written only while the
version it rewords is still the newest one written — a slow answer about an older version is dropped
(the newer version has its own rewording on the way) — and never before its template row, which it
must replace, not be replaced by. The check and the write happen under one lock with the record of
the newest version, so no ordering of the threads lets an older text win.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING

from clickhouse_connect.driver.client import Client
from prometheus_client import Counter

from shoppulse.sidecar.explain import InsightPayload

if TYPE_CHECKING:  # the model's client is an extra (shoppulse[llm]); main.py imports it only when configured
    from shoppulse.sidecar.llm import InsightWriter

log = logging.getLogger(__name__)

REWORDINGS = Counter("shoppulse_sidecar_rewordings", "The model's rewordings of insights", ["outcome"])


class Rewording:
    def __init__(self, writer: InsightWriter, client: Client, columns: list[str], workers: int = 2) -> None:
        self._writer = writer
        self._client = client
        self._columns = columns
        self._newest: dict[object, object] = {}  # insight id -> the payload of its newest written version
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm")

    def submit(self, payload: InsightPayload, opened_at: datetime, anomaly_id: uuid.UUID, row: list[object]) -> None:
        """Reword ``row``, a template row already written (its id in column 1, its payload in column 8)."""
        with self._lock:
            self._newest[row[1]] = row[8]
        self._pool.submit(self._reword, payload, opened_at, anomaly_id, row)

    def _reword(self, payload: InsightPayload, opened_at: datetime, anomaly_id: uuid.UUID, row: list[object]) -> None:
        try:
            insight = self._writer.write(payload, opened_at, anomaly_id)
            if insight.source == "template":
                REWORDINGS.labels("kept_template").inc()
                return
            with self._lock:
                if self._newest.get(row[1]) != row[8]:
                    REWORDINGS.labels("superseded").inc()
                    return
                self._client.insert("insights", [[*row[:6], insight.text, insight.source, *row[8:]]],
                                    column_names=self._columns)
            REWORDINGS.labels("written").inc()
        except Exception as exc:  # the template's wording stands; the next version is reworded again
            REWORDINGS.labels("failed").inc()
            log.warning("insight not reworded", extra={"anomaly_id": str(anomaly_id),
                                                       "error": str(exc).splitlines()[0][:300] if str(exc) else
                                                       type(exc).__name__})

    def shutdown(self, wait: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
