"""The incidents the actions act on, as the sidecar stored them (``incidents``, latest version each)."""

from __future__ import annotations

import uuid
from datetime import datetime

from clickhouse_connect.driver.client import Client

from shoppulse.actions.decide import Contributor, IncidentFacts
from shoppulse.clickhouse import as_utc


def stored_incidents(client: Client, begin: datetime, end: datetime) -> list[IncidentFacts]:
    """The incidents opened from ``begin`` to ``end``, as the sidecar last wrote them."""
    return _read(client, "opened_at >= {begin:DateTime64(3)} AND opened_at < {end:DateTime64(3)}", begin, end)


def _read(client: Client, where: str, begin: datetime, end: datetime) -> list[IncidentFacts]:
    # an incident's confidence: the strongest blended score of its anomaly regions (each region's newest row)
    rows = client.query(
        "SELECT i.incident_id, kind, countries, severity, opened_at, resolved_at, contributor_dimensions, "
        "contributor_values, contributor_shares, story, metrics, a.confidence "
        f"FROM (SELECT * FROM incidents FINAL WHERE {where}) AS i "
        "LEFT JOIN (SELECT assumeNotNull(incident_id) AS incident_id, max(score) AS confidence FROM anomalies FINAL "
        "WHERE incident_id IS NOT NULL GROUP BY incident_id) AS a ON a.incident_id = i.incident_id ORDER BY opened_at",
        parameters={"begin": begin.replace(tzinfo=None), "end": end.replace(tzinfo=None)}).result_rows
    incidents = []
    for (incident_id, kind, countries, severity, opened_at, resolved_at, dimensions, values, shares, story, metrics,
         confidence) in rows:
        incidents.append(IncidentFacts(
            uuid.UUID(str(incident_id)), str(kind), tuple(countries), str(severity), as_utc(opened_at),
            None if resolved_at is None else as_utc(resolved_at),
            tuple(Contributor(str(d), str(v), float(s)) for d, v, s in zip(dimensions, values, shares, strict=True)),
            str(story), tuple(str(m) for m in metrics), float(confidence or 0.0)))
    return incidents


def incidents_in_play(client: Client, since: datetime, now: datetime) -> list[IncidentFacts]:
    """The incidents actions may still concern at ``now``: open ones however long ago they opened, and
    those resolved since ``since`` (their actions' rollbacks)."""
    return _read(client, "opened_at < {end:DateTime64(3)} AND "
                         "(resolved_at IS NULL OR resolved_at >= {begin:DateTime64(3)})", since, now)
