"""The audit trail of automated actions (``action_audit``): one row per step, appended, never changed.

A proposal records the call the action makes and the call that rolls it back, rendered from the
incident as it was when proposed: what an approver approves is what runs, and what is rolled back is
what ran, even when the incident's contributors change meanwhile.

Steps: ``proposed`` or ``refused`` (the decision, with its reason), ``approved`` / ``rejected`` /
``expired`` (the approval, with who), ``executed`` / ``failed`` (the request and the response),
``rolled_back`` (the inverse call). What the guardrails need back — each recent action's policy,
country, latest step and when it was proposed — is read from the same table, so a restarted
processor sees every action its predecessor took.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from clickhouse_connect.driver.client import Client

from shoppulse.actions.decide import Decision, PastAction

Step = Literal["proposed", "refused", "approved", "rejected", "expired", "executed", "failed", "rolled_back"]
Mode = Literal["dry_run", "live"]
COLUMNS = ["at", "action_id", "policy", "incident_id", "country", "step", "mode", "actor", "detail", "request",
           "rollback", "response"]
ACTOR = "shoppulse"  # the steps shoppulse takes itself; an approval names its approver
REMEMBERED = timedelta(days=1)  # longer than any rate limit or rollback wait reaches back
# An action's steps in the order they happen: two steps of one pass share a moment, so the order
# among them is the step's own (a proposal executed in the pass that made it).
STEP_ORDER = "['proposed', 'refused', 'approved', 'rejected', 'expired', 'executed', 'failed', 'rolled_back']"


def decision_rows(decisions: Sequence[Decision], mode: Mode) -> list[list[Any]]:
    return [[d.at, d.action_id, d.policy.name, d.incident.incident_id, d.country, d.outcome, mode, ACTOR, d.reason,
             json.dumps(d.request, sort_keys=True), json.dumps(d.rollback, sort_keys=True), ""] for d in decisions]


def record_decisions(client: Client, decisions: Sequence[Decision], mode: Mode) -> None:
    if decisions:
        client.insert("action_audit", decision_rows(decisions, mode), column_names=COLUMNS)


def record_step(client: Client, decision: Decision, step: Step, mode: Mode, at: datetime, actor: str = ACTOR,
                detail: str = "", response: dict[str, Any] | None = None) -> None:
    """One later step of an action (an approval, its execution, its rollback)."""
    client.insert("action_audit", [[at, decision.action_id, decision.policy.name, decision.incident.incident_id,
                                    decision.country, step, mode, actor, detail,
                                    json.dumps(decision.request, sort_keys=True),
                                    json.dumps(decision.rollback, sort_keys=True),
                                    "" if response is None else json.dumps(response, sort_keys=True)]],
                  column_names=COLUMNS)


def recent_actions(client: Client, now: datetime, mode: Mode) -> list[PastAction]:
    """Every action of ``mode`` proposed or refused in the last day: its latest step, when it was decided."""
    rows = client.query(
        f"SELECT action_id, any(policy), any(country), argMax(step, (at, indexOf({STEP_ORDER}, step))), min(at) "
        "FROM action_audit "
        "WHERE mode = {mode:String} AND at >= {since:DateTime64(3)} GROUP BY action_id",
        parameters={"mode": mode, "since": (now - REMEMBERED).replace(tzinfo=None)}).result_rows
    return [PastAction(uuid.UUID(str(action_id)), str(policy), str(country), str(step),
                       at if at.tzinfo else at.replace(tzinfo=UTC))
            for action_id, policy, country, step, at in rows]
