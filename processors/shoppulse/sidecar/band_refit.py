"""The seasonal bands refitted in the background: the hour-of-week baselines refreshed, then every series'
Holt-Winters band refitted (``baselines.py``, ``seasonal.py``), every ``every``.

A refit of every series takes seconds; on the detection thread it would hold up the fast path's looks
(twice a second) for as long. On its own thread with its own ClickHouse client (clickhouse-connect's
client runs one query at a time), detection never waits for it: the bands it writes are read with the
next steps."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client

from shoppulse.sidecar import baselines, seasonal

log = logging.getLogger(__name__)
RETRY_S = 60.0  # after a failed refit (ClickHouse away), the next try


def refit_bands(client: Client) -> None:
    """Refresh the hour-of-week baselines, then refit every series' band (which takes the week's shape
    from them)."""
    now = datetime.now(UTC)
    baselines.refresh(client, now)
    seasonal.refit(client, now)


class BandRefitter(threading.Thread):
    def __init__(self, connect: Callable[[], Client], every: timedelta) -> None:
        super().__init__(name="seasonal-refit", daemon=True)
        self._connect, self._every = connect, every
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        client: Client | None = None
        while not self._stop.is_set():
            wait = self._every.total_seconds()
            try:
                client = client or self._connect()
                refit_bands(client)
            except Exception as exc:  # ClickHouse away: the bands in use stay, try again soon
                log.warning("seasonal refit failed, retrying", extra={"error": str(exc)[:200]})
                wait = min(wait, RETRY_S)
            self._stop.wait(wait)
        if client is not None:
            client.close()
