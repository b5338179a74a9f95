"""What the action policies would have done about the incidents of a stretch of time (a dry run).

Each incident the sidecar stored is offered to each policy at the moment the policy's minimum
duration has passed since the incident opened and at each later version the sidecar wrote of it, in
the order those moments come, with every earlier decision on record — so rate limits, conflicts and
idempotency act as they would have live. Where its versions are given, the incident is judged at each
moment by the newest version written for it (its kind, severity and contributors as the live
processor saw them then: a region joining later can change its kind, and severity grows); else by
its latest version.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

from clickhouse_connect.driver.client import Client

from shoppulse.actions.decide import Decision, IncidentFacts, PastAction, decide
from shoppulse.actions.incidents import incident_versions, stored_incidents
from shoppulse.actions.policy import Policy


def as_of(versions: Sequence[tuple[datetime, IncidentFacts]], moment: datetime) -> IncidentFacts | None:
    """The newest of an incident's versions (oldest first) written for ``moment`` or before it."""
    seen = [facts for at, facts in versions if at <= moment]
    return seen[-1] if seen else None


def dry_run(policies: Sequence[Policy], incidents: Sequence[IncidentFacts],
            versions: Mapping[uuid.UUID, Sequence[tuple[datetime, IncidentFacts]]] | None = None) -> list[Decision]:
    """Every decision the policies would have made, in the order they would have made them: each incident offered
    to each policy once its minimum duration has passed and again at each later version of it (as the live
    processor sees every update; what is on record is not proposed twice)."""
    versions = versions or {}
    moments = []
    for index, policy in enumerate(policies):
        for latest in incidents:
            due = latest.opened_at + policy.min_duration
            later = [at for at, _ in versions.get(latest.incident_id, ()) if at > due]
            moments += [(at, index, policy, latest) for at in [due, *later]]
    moments.sort(key=lambda m: (m[0], m[1], m[3].opened_at))
    history: list[PastAction] = []
    decisions: list[Decision] = []
    for at, _, policy, latest in moments:
        incident = as_of(versions.get(latest.incident_id, ()), at) or latest
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
    return report_lines(dry_run(policies, incidents, incident_versions(client, begin, end)), incidents, origin)
