"""The audit trail of automated actions (``action_audit``): one row per step, appended, never changed.

A proposal records the call the action makes and the call that rolls it back, rendered from the
incident as it was when proposed: what an approver approves is what runs, and what is rolled back is
what ran, even when the incident's contributors change meanwhile.

Steps: ``proposed`` or ``refused`` (the decision, with its reason), ``approval_requested`` (where
the approvers were asked: the Slack message), ``approved`` / ``rejected`` / ``expired`` (the
approval, with who and how), ``executed`` / ``failed`` (the request and the response),
``rolled_back`` (the inverse call). What the guardrails need back — each recent action's policy,
country, latest step and when it was proposed — is read from the same table, so a restarted
processor sees every action its predecessor took.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast, get_args

from clickhouse_connect.driver.client import Client

from shoppulse.actions.decide import ENDED, Decision, PastAction
from shoppulse.clickhouse import as_utc

Step = Literal["proposed", "refused", "approval_requested", "approved", "rejected", "expired", "executed", "failed",
               "rolled_back"]
Mode = Literal["dry_run", "live"]
COLUMNS = ["at", "action_id", "policy", "incident_id", "country", "step", "mode", "actor", "detail", "request",
           "rollback", "response"]
ACTOR = "shoppulse"  # the steps shoppulse takes itself; an approval names its approver
REMEMBERED = timedelta(days=1)  # longer than any rate limit or rollback wait reaches back
# An action's steps in the order they happen: two steps of one pass share a moment, so the order
# among them is the step's own (a proposal executed in the pass that made it).
STEP_ORDER = str(list(get_args(Step)))


def decision_rows(decisions: Sequence[Decision], mode: Mode) -> list[list[Any]]:
    return [[d.at, d.action_id, d.policy.name, d.incident.incident_id, d.country, d.outcome, mode, ACTOR, d.reason,
             json.dumps(d.request, sort_keys=True), json.dumps(d.rollback, sort_keys=True), ""] for d in decisions]


def record_decisions(client: Client, decisions: Sequence[Decision], mode: Mode) -> None:
    if decisions:
        client.insert("action_audit", decision_rows(decisions, mode), column_names=COLUMNS)


@dataclass(frozen=True)
class ActionState:
    """An action as the audit table tells it: its decision and every step since."""

    action_id: uuid.UUID
    policy: str
    incident_id: uuid.UUID
    country: str
    mode: Mode
    steps: tuple[tuple[str, datetime, str], ...]  # (step, at, actor), in order
    request: dict[str, Any]  # the call, as proposed (and approved)
    rollback: dict[str, Any]  # the call that undoes it, as proposed
    responses: tuple[dict[str, Any], ...] = ()  # each step's response, in the order of ``steps``

    @property
    def latest(self) -> str:
        return self.steps[-1][0]

    @property
    def proposed_at(self) -> datetime:
        return self.steps[0][1]

    @property
    def awaiting_approval(self) -> bool:
        return self.latest in {"proposed", "approval_requested"}

    def at(self, step: str) -> datetime | None:
        return next((at for name, at, _ in self.steps if name == step), None)

    def response(self, step: str) -> dict[str, Any] | None:
        """The response recorded with ``step`` (e.g. where an approval was requested)."""
        return next((r for (name, _, _), r in zip(self.steps, self.responses, strict=False) if name == step), None)


def read_actions(client: Client, since: datetime, action: uuid.UUID | None = None) -> list[ActionState]:
    """Every action with a step since ``since`` or still in force, however old (an action executed hours
    ago still awaits its rollback), or just ``action``; with all its steps."""
    rows = client.query(
        "SELECT action_id, any(policy), any(incident_id), any(country), any(mode), "
        f"arraySort(x -> (x.2, indexOf({STEP_ORDER}, x.1)), groupArray((step, at, actor, response))), "
        "argMinIf(request, at, step IN ('proposed', 'refused')), "
        "argMinIf(rollback, at, step IN ('proposed', 'refused')) FROM action_audit "
        "WHERE action_id IN (SELECT action_id FROM actions WHERE updated_at >= {since:DateTime64(3)} "
        f"OR state NOT IN {sorted(ENDED)}) "
        "AND ({action:Nullable(UUID)} IS NULL OR action_id = {action:Nullable(UUID)}) "
        "GROUP BY action_id", parameters={"since": since.replace(tzinfo=None), "action": action}).result_rows
    return [ActionState(uuid.UUID(str(a)), str(p), uuid.UUID(str(i)), str(c), cast(Mode, str(m)),
                        tuple((str(step), as_utc(at), str(actor)) for step, at, actor, _ in steps),
                        json.loads(request or "{}"), json.loads(rollback or "{}"),
                        tuple(json.loads(response) if response else {} for *_, response in steps))
            for a, p, i, c, m, steps, request, rollback in rows]


def record_step(client: Client, action: ActionState, step: Step, at: datetime, actor: str = ACTOR,
                detail: str = "", response: dict[str, Any] | None = None) -> None:
    """One later step of an action (its approval, execution, rollback), with the calls as proposed."""
    client.insert("action_audit", [[at, action.action_id, action.policy, action.incident_id, action.country, step,
                                    action.mode, actor, detail, json.dumps(action.request, sort_keys=True),
                                    json.dumps(action.rollback, sort_keys=True),
                                    "" if response is None else json.dumps(response, sort_keys=True)]],
                  column_names=COLUMNS)


def recent_actions(client: Client, now: datetime, mode: Mode) -> list[PastAction]:
    """Every action of ``mode`` that moved in the last day: its latest step, when it was proposed (the
    ``actions`` view, the one definition of an action's state)."""
    rows = client.query(
        "SELECT action_id, policy, country, state, proposed_at FROM actions "
        "WHERE mode = {mode:String} AND updated_at >= {since:DateTime64(3)}",
        parameters={"mode": mode, "since": (now - REMEMBERED).replace(tzinfo=None)}).result_rows
    return [PastAction(uuid.UUID(str(action_id)), str(policy), str(country), str(step), as_utc(at))
            for action_id, policy, country, step, at in rows]
