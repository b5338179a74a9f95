"""The actions processor's loop: incidents in, audited proposals, approvals, executions and rollbacks out.

Each ``step`` reads the incidents the sidecar stored and the actions on record (``action_audit``),
and moves every action one step on, recording each step before the next is taken:

1. decide (``decide.py``) on every open incident: proposals and refusals;
2. a proposal whose policy needs no approval, or an approved one, is executed — live: the shop's
   admin API is called with the action's id as its idempotency key; dry run: nothing is sent and the
   step says so;
3. a proposal still unapproved when its approval expires is recorded as expired, and never runs;
   while a kill switch is on (global, or the policy's ``enabled: false``) nothing is executed, though
   rollbacks still are;
4. an executed action is rolled back as its policy says: when its incident resolves, and/or when
   the incident is still open ``not_recovered_after`` the execution (the KPI has not recovered).

A crash anywhere loses nothing: a step not yet recorded is taken again on the next pass, and the
shop's idempotency key makes a repeated call a no-op (an execution recorded nowhere is re-sent
with the same key and answered with the first answer). Every decision of the loop is a function of
what is recorded, so two passes over the same records do the same thing.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from clickhouse_connect.driver.client import Client
from prometheus_client import Counter

from shoppulse.actions.audit import STEP_ORDER, Mode, Step, record_decisions, record_step
from shoppulse.actions.decide import Decision, IncidentFacts, PastAction, decide
from shoppulse.actions.dry_run import stored_incidents
from shoppulse.actions.execute import Outcome, ShopAdminClient
from shoppulse.actions.policy import Policy, parse_minutes

log = logging.getLogger(__name__)

STEPS = Counter("shoppulse_actions_steps", "Steps of automated actions", ["policy", "step", "mode"])
LOOK_BACK = timedelta(hours=6)  # incidents opened this long ago may still be open or need a rollback


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

    @property
    def latest(self) -> str:
        return self.steps[-1][0]

    def at(self, step: str) -> datetime | None:
        return next((at for name, at, _ in self.steps if name == step), None)


def rollback_key(action_id: uuid.UUID) -> uuid.UUID:
    """The idempotency key of an action's rollback (another call than the action's own)."""
    return uuid.uuid5(action_id, "rollback")


def read_actions(client: Client, since: datetime) -> list[ActionState]:
    rows = client.query(
        "SELECT action_id, any(policy), any(incident_id), any(country), any(mode), "
        f"arraySort(x -> (x.2, indexOf({STEP_ORDER}, x.1)), groupArray((step, at, actor))), "
        "argMinIf(request, at, step IN ('proposed', 'refused')), "
        "argMinIf(rollback, at, step IN ('proposed', 'refused')) FROM action_audit "
        "WHERE action_id IN (SELECT action_id FROM action_audit WHERE at >= {since:DateTime64(3)}) "
        "GROUP BY action_id", parameters={"since": since.replace(tzinfo=None)}).result_rows
    return [ActionState(uuid.UUID(str(a)), str(p), uuid.UUID(str(i)), str(c), cast(Mode, str(m)),
                        tuple((str(step), at if at.tzinfo else at.replace(tzinfo=UTC), str(actor))
                              for step, at, actor in steps), json.loads(request or "{}"), json.loads(rollback or "{}"))
            for a, p, i, c, m, steps, request, rollback in rows]


class ActionsProcessor:
    def __init__(self, client: Client, policies: Sequence[Policy], shop: ShopAdminClient | None,
                 kill_switch: bool = False) -> None:
        self.client = client
        self.policies = {p.name: p for p in policies}
        self.shop = shop
        self.kill_switch = kill_switch

    def step(self, now: datetime) -> None:
        incidents = {i.incident_id: i for i in stored_incidents(self.client, now - LOOK_BACK, now)}
        actions = read_actions(self.client, now - LOOK_BACK)
        modes: tuple[Mode, ...] = ("live", "dry_run")
        for mode in modes:
            policies = [p for p in self.policies.values() if p.mode == mode]
            history = [PastAction(a.action_id, a.policy, a.country, a.latest, a.steps[0][1])
                       for a in actions if a.mode == mode]
            for incident in incidents.values():
                decisions = decide(policies, incident, now, history, self.kill_switch)
                record_decisions(self.client, decisions, mode)
                for decision in decisions:
                    STEPS.labels(decision.policy.name, decision.outcome, mode).inc()
                    log.info(f"action {decision.outcome}", extra={
                        "policy": decision.policy.name, "country": decision.country,
                        "action_id": str(decision.action_id), "reason": decision.reason})
                    history.append(PastAction(decision.action_id, decision.policy.name, decision.country,
                                              decision.outcome, now))
        for action in read_actions(self.client, now - LOOK_BACK):
            policy = self.policies.get(action.policy)
            about = incidents.get(action.incident_id)
            if policy is None or about is None:
                continue  # a policy since removed, or an incident out of sight: leave it as recorded
            self._advance(action, policy, about, now)

    def _decision(self, action: ActionState, policy: Policy, incident: IncidentFacts) -> Decision:
        """The action as proposed: its calls are the recorded ones, never re-rendered from the incident."""
        return Decision(action.action_id, policy, incident, action.country, None, action.steps[0][1], "proposed", "",
                        action.request, action.rollback)

    def _record(self, decision: Decision, step: Step, mode: Mode, now: datetime, detail: str = "",
                response: dict[str, Any] | None = None) -> None:
        record_step(self.client, decision, step, mode, now, detail=detail, response=response)
        STEPS.labels(decision.policy.name, step, mode).inc()
        log.info(f"action {step}", extra={"policy": decision.policy.name, "country": decision.country,
                                          "action_id": str(decision.action_id), "detail": detail})

    def _send(self, request: dict[str, Any], key: uuid.UUID, mode: Mode) -> Outcome:
        if mode != "live":
            return Outcome(True, None, {"dry_run": "not sent"}, 0)
        if self.shop is None:
            return Outcome(False, None, None, 0, "no shop admin API configured (SHOPPULSE_SHOP_ADMIN_URL)")
        return self.shop.send(request, key)

    def _advance(self, action: ActionState, policy: Policy, incident: IncidentFacts, now: datetime) -> None:
        decision = self._decision(action, policy, incident)
        approval = policy.approval
        needs_approval = approval is not None and approval.required and action.mode == "live"
        if action.latest == "proposed" and needs_approval:
            assert approval is not None
            if now - action.steps[0][1] >= parse_minutes(approval.expires_after):
                self._record(decision, "expired", action.mode, now, f"no approval within {approval.expires_after}")
            return
        if action.latest in {"proposed", "approved"}:
            if self.kill_switch or not policy.enabled:
                return  # nothing new runs while a kill switch is on (an unapproved proposal still expires)
            outcome = self._send(decision.request, action.action_id, action.mode)
            self._record(decision, "executed" if outcome.ok else "failed", action.mode, now,
                         outcome.error or ("dry run: nothing sent" if action.mode != "live" else ""),
                         outcome.as_record())
            return
        if action.latest != "executed" or policy.rollback is None:
            return
        executed_at = action.at("executed")
        assert executed_at is not None
        resolved = incident.resolved_at is not None and incident.resolved_at <= now
        waited = policy.rollback.not_recovered_after
        why = ""
        if resolved and "incident_resolved" in policy.rollback.when:
            why = "the incident resolved"
        elif (not resolved and waited is not None and "not_recovered" in policy.rollback.when
              and now - executed_at >= parse_minutes(waited)):
            why = f"the incident is still open {waited} after the action: not recovered"
        if why:
            outcome = self._send(decision.rollback, rollback_key(action.action_id), action.mode)
            self._record(decision, "rolled_back" if outcome.ok else "failed", action.mode, now,
                         f"rolled back: {why}" if outcome.ok else f"rollback failed: {outcome.error}",
                         outcome.as_record())


def record_approval(client: Client, policies: Sequence[Policy], action_id: uuid.UUID, approve: bool, actor: str,
                    now: datetime) -> str:
    """An approver's answer to a pending proposal; what happened, in words. Only a pending proposal
    can be answered, only by one of its policy's approvers, and only before it expires."""
    found = [a for a in read_actions(client, now - LOOK_BACK) if a.action_id == action_id]
    if not found:
        return f"no action {action_id} in the last {LOOK_BACK}"
    action = found[0]
    policy = {p.name: p for p in policies}.get(action.policy)
    if policy is None or policy.approval is None:
        return f"action {action_id} ({action.policy}) needs no approval"
    if action.latest != "proposed":
        return f"action {action_id} is {action.latest}, not awaiting approval"
    if actor not in policy.approval.approvers:
        return f"{actor} may not approve {policy.name} (approvers: {', '.join(policy.approval.approvers)})"
    if now - action.steps[0][1] >= parse_minutes(policy.approval.expires_after):
        return f"action {action_id} expired ({policy.approval.expires_after} after its proposal)"
    incident = IncidentFacts(action.incident_id, "", (action.country,), "", action.steps[0][1], None)
    decision = Decision(action_id, policy, incident, action.country, None, action.steps[0][1], "proposed", "",
                        action.request, action.rollback)
    step: Step = "approved" if approve else "rejected"
    record_step(client, decision, step, action.mode, now, actor=actor)
    STEPS.labels(policy.name, step, action.mode).inc()
    return f"action {action_id} {step} by {actor}"
