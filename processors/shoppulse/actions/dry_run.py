"""What the action policies would have done about the incidents of a stretch of time (a dry run).

Each incident the sidecar stored (its latest version) is offered to each policy at the moment the
policy's minimum duration has passed since the incident opened, in the order those moments come,
with every earlier decision on record — so rate limits, conflicts and idempotency act as they would
have live. The incident is judged by its latest version (its final severity and contributors), which
the live processor would only have seen as the incident grew.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from shoppulse.actions.decide import Contributor, Decision, IncidentFacts, PastAction, decide
from shoppulse.actions.policy import Policy


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


def dry_run(policies: Sequence[Policy], incidents: Sequence[IncidentFacts]) -> list[Decision]:
    """Every decision the policies would have made, in the order they would have made them."""
    moments = sorted(((incident.opened_at + policy.min_duration, index, policy, incident)
                      for index, policy in enumerate(policies) for incident in incidents),
                     key=lambda m: (m[0], m[1], m[3].opened_at))
    history: list[PastAction] = []
    decisions: list[Decision] = []
    for at, _, policy, incident in moments:
        for decision in decide([policy], incident, at, history):
            decisions.append(decision)
            history.append(PastAction(decision.action_id, policy.name, decision.country, decision.outcome, at))
    return decisions


def report_lines(decisions: Sequence[Decision], incidents: Sequence[IncidentFacts], origin: datetime) -> list[str]:
    """The dry run as lines for the terminal, times from ``origin``."""
    lines = [f"Actions the policies would have taken (dry run, {len(incidents)} incident(s) stored):"]
    if not decisions:
        lines.append("  none: no incident triggered a policy")
    for d in decisions:
        minute = int((d.at - origin).total_seconds() // 60)
        approval = ""
        if d.policy.approval is not None and d.policy.approval.required:
            approval = f", awaiting approval by {', '.join(d.policy.approval.approvers)}"
        what = d.request.get("http") or d.request.get("kafka") or {}
        call = (f"{what['method']} {what['path']}" if "method" in what else f"command on {what.get('topic')}")
        lines.append(f"  +{minute}m {d.policy.name} in {d.country}: {d.outcome}{approval} — {call} "
                     f"(incident {d.incident.incident_id}: {d.reason})")
    return lines


def dry_run_report(client: Client, policies: Sequence[Policy], begin: datetime, end: datetime,
                   origin: datetime) -> list[str]:
    """The dry run over the incidents opened from ``begin`` to ``end``, as lines."""
    incidents = stored_incidents(client, begin, end)
    return report_lines(dry_run(policies, incidents), incidents, origin)
