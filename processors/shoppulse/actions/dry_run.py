"""What the action policies would have done about the incidents of a stretch of time (a dry run).

Each incident the sidecar stored (its latest version) is offered to each policy at the moment the
policy's minimum duration has passed since the incident opened, in the order those moments come,
with every earlier decision on record — so rate limits, conflicts and idempotency act as they would
have live. The incident is judged by its latest version (its final severity and contributors), which
the live processor would only have seen as the incident grew.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from clickhouse_connect.driver.client import Client

from shoppulse.actions.decide import Decision, IncidentFacts, PastAction, decide
from shoppulse.actions.incidents import stored_incidents
from shoppulse.actions.policy import Policy


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
