"""The incidents the actions act on, as the sidecar stored them (``incidents``, latest version each)."""

from __future__ import annotations

import uuid
from datetime import datetime

from clickhouse_connect.driver.client import Client

from shoppulse.actions.decide import Contributor, IncidentFacts
from shoppulse.clickhouse import as_utc

OPENED_BETWEEN = "opened_at >= {begin:DateTime64(3)} AND opened_at < {end:DateTime64(3)}"


def stored_incidents(client: Client, begin: datetime, end: datetime) -> list[IncidentFacts]:
    """The incidents opened from ``begin`` to ``end``, as the sidecar last wrote them."""
    return [facts for _, facts in _read(client, OPENED_BETWEEN, begin, end)]


Versions = dict[uuid.UUID, list[tuple[datetime, IncidentFacts]]]


def incident_versions(client: Client, begin: datetime, end: datetime) -> Versions:
    """Every version the sidecar wrote of the incidents opened from ``begin`` to ``end``, by incident, oldest
    first, each with the event time it describes (``as_of``): what a live processor saw of it at each moment."""
    versions: Versions = {}
    for as_of, facts in sorted(_read(client, OPENED_BETWEEN, begin, end, final=False), key=lambda v: v[0]):
        versions.setdefault(facts.incident_id, []).append((as_of, facts))
    return versions


def _read(client: Client, where: str, begin: datetime, end: datetime,
          final: bool = True) -> list[tuple[datetime, IncidentFacts]]:
    # an incident's confidence: the strongest (calibrated) score of its anomaly regions (each region's newest row)
    rows = client.query(
        "SELECT i.incident_id, kind, countries, severity, opened_at, resolved_at, contributor_dimensions, "
        "contributor_values, contributor_shares, story, metrics, a.confidence, as_of "
        f"FROM (SELECT * FROM incidents {'FINAL' if final else ''} WHERE {where}) AS i "
        "LEFT JOIN (SELECT assumeNotNull(incident_id) AS incident_id, max(score) AS confidence FROM anomalies FINAL "
        "WHERE incident_id IS NOT NULL GROUP BY incident_id) AS a ON a.incident_id = i.incident_id ORDER BY opened_at",
        parameters={"begin": begin.replace(tzinfo=None), "end": end.replace(tzinfo=None)}).result_rows
    incidents: list[tuple[datetime, IncidentFacts]] = []
    for (incident_id, kind, countries, severity, opened_at, resolved_at, dimensions, values, shares, story, metrics,
         confidence, as_of) in rows:
        incidents.append((as_utc(as_of), IncidentFacts(
            uuid.UUID(str(incident_id)), str(kind), tuple(countries), str(severity), as_utc(opened_at),
            None if resolved_at is None else as_utc(resolved_at),
            tuple(Contributor(str(d), str(v), float(s)) for d, v, s in zip(dimensions, values, shares, strict=True)),
            str(story), tuple(str(m) for m in metrics), float(confidence or 0.0))))
    return incidents


def incidents_in_play(client: Client, since: datetime, now: datetime) -> list[IncidentFacts]:
    """The incidents actions may still concern at ``now``: open ones however long ago they opened, and
    those resolved since ``since`` (their actions' rollbacks)."""
    return [facts for _, facts in _read(client, "opened_at < {end:DateTime64(3)} AND "
                                                "(resolved_at IS NULL OR resolved_at >= {begin:DateTime64(3)})",
                                        since, now)]
