"""The calendar of known events in ClickHouse, for the wall display to mark them.

The ops team should see on the wall why a country's volumes are not judged for a while. Each time the
sidecar applies the calendar it writes its events (``known_events``, one set of rows per version of the
calendar, named by a digest of its events) and then the version it applied (``calendar_loads``); the
view ``known_events_in_force`` gives the events of the latest one, which Store live's *Known events*
annotation query reads. A version's events are written once: a restart, a retry after ClickHouse was
away, or a return to an earlier calendar only adds its line to ``calendar_loads``, and a crash between
the two writes leaves the previous version in force.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

from clickhouse_connect.driver.client import Client

from shoppulse.clickhouse import as_utc
from shoppulse.sidecar.event_calendar import Calendar

log = logging.getLogger(__name__)

EVENT_COLUMNS = ["calendar_version", "name", "kind", "countries", "starts_at", "ends_at", "level"]


def calendar_version(calendar: Calendar) -> str:
    """A digest of the calendar's events: equal calendars have equal versions, whatever file they came from."""
    return hashlib.sha256(calendar.as_yaml().encode()).hexdigest()[:16]


def show(client: Client, calendar: Calendar, now: datetime) -> str:
    """Put ``calendar`` in force for the wall display; returns its version."""
    version = calendar_version(calendar)
    stored = client.command("SELECT count() FROM known_events WHERE calendar_version = {v:String}",
                            parameters={"v": version})
    if calendar.events and not stored:  # one INSERT is one block: all of a version's rows or none
        client.insert("known_events", [[version, e.name, e.kind, e.countries or [], e.start, e.end, e.level]
                                       for e in calendar.events], column_names=EVENT_COLUMNS)
    client.insert("calendar_loads", [[now, version, len(calendar.events)]],
                  column_names=["loaded_at", "calendar_version", "events"])
    log.info("calendar shown", extra={"calendar_version": version, "events": len(calendar.events)})
    return version


def in_force(client: Client) -> tuple[str, datetime] | None:
    """The version of the calendar the sidecar applied last, and when; None before it applied any."""
    rows = client.query("SELECT calendar_version, loaded_at FROM calendar_loads ORDER BY loaded_at DESC LIMIT 1"
                        ).result_rows
    if not rows:
        return None
    version, loaded_at = rows[0]
    return str(version), as_utc(loaded_at)
