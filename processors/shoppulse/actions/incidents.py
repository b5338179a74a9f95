"""The incidents the actions act on, as the sidecar stored them (``incidents``, latest version each)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from shoppulse.actions.decide import Contributor, IncidentFacts


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else (moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def stored_incidents(client: Client, begin: datetime, end: datetime) -> list[IncidentFacts]:
    """The incidents opened from ``begin`` to ``end``, as the sidecar last wrote them."""
    rows = client.query(
        "SELECT incident_id, kind, countries, severity, opened_at, resolved_at, contributor_dimensions, "
        "contributor_values, contributor_shares, story FROM incidents FINAL "
        "WHERE opened_at >= {begin:DateTime64(3)} AND opened_at < {end:DateTime64(3)} ORDER BY opened_at",
        parameters={"begin": begin.replace(tzinfo=None), "end": end.replace(tzinfo=None)}).result_rows
    incidents = []
    for incident_id, kind, countries, severity, opened_at, resolved_at, dimensions, values, shares, story in rows:
        opened = _utc(opened_at)
        assert opened is not None
        incidents.append(IncidentFacts(
            uuid.UUID(str(incident_id)), str(kind), tuple(countries), str(severity), opened, _utc(resolved_at),
            tuple(Contributor(str(d), str(v), float(s)) for d, v, s in zip(dimensions, values, shares, strict=True)),
            str(story)))
    return incidents
