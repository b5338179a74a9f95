"""The actions processor's loop: incidents in, audited proposals, approvals, executions and rollbacks out.

Each ``step`` reads the incidents the sidecar stored and the actions on record (``action_audit``),
and moves every action one step on, recording each step before the next is taken:

1. decide (``decide.py``) on every open incident: proposals and refusals;
2. a live proposal that needs approval is put to its approvers in Slack (once: the message is on
   record as ``approval_requested``), who answer with its buttons, a signed link or the CLI;
   a proposal whose policy needs no approval, or an approved one, is executed — live: the shop's
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

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client
from prometheus_client import Counter

from shoppulse.actions.approvals import close_request, expires_at
from shoppulse.actions.audit import ActionState, Mode, Step, read_actions, record_decisions, record_step
from shoppulse.actions.commands import KafkaCommandSender
from shoppulse.actions.decide import IncidentFacts, PastAction, decide
from shoppulse.actions.execute import Outcome, ShopAdminClient
from shoppulse.actions.incidents import incidents_in_play
from shoppulse.actions.policy import Policy, parse_minutes
from shoppulse.actions.slack import SlackApprovals, SlackError

log = logging.getLogger(__name__)

STEPS = Counter("shoppulse_actions_steps", "Steps of automated actions", ["policy", "step", "mode"])
LOOK_BACK = timedelta(hours=6)  # how long a resolved incident or an ended action stays in a pass's view


def _counted(policy: str, country: str, action_id: uuid.UUID, step: str, mode: Mode, **why: str) -> None:
    """A step on record: counted per policy, step and mode, and logged (with its reason or detail)."""
    STEPS.labels(policy, step, mode).inc()
    log.info(f"action {step}", extra={"policy": policy, "country": country, "action_id": str(action_id), **why})


def rollback_key(action_id: uuid.UUID) -> uuid.UUID:
    """The idempotency key of an action's rollback (another call than the action's own)."""
    return uuid.uuid5(action_id, "rollback")


class ActionsProcessor:
    def __init__(self, client: Client, policies: Sequence[Policy], shop: ShopAdminClient | None,
                 kill_switch: bool = False, slack: SlackApprovals | None = None,
                 commands: KafkaCommandSender | None = None) -> None:
        self.client = client
        self.policies = {p.name: p for p in policies}
        self.shop = shop
        self.commands = commands
        self.kill_switch = kill_switch
        self.slack = slack
        self.ask_again_at: dict[uuid.UUID, datetime] = {}  # an approval request Slack refused: not before then

    def step(self, now: datetime) -> None:
        incidents = {i.incident_id: i for i in incidents_in_play(self.client, now - LOOK_BACK, now)}
        actions = read_actions(self.client, now - LOOK_BACK)
        modes: tuple[Mode, ...] = ("live", "dry_run")
        proposed = 0
        for mode in modes:
            policies = [p for p in self.policies.values() if p.mode == mode]
            history = [PastAction(a.action_id, a.policy, a.country, a.latest, a.proposed_at)
                       for a in actions if a.mode == mode]
            for incident in incidents.values():
                decisions = decide(policies, incident, now, history, self.kill_switch)
                record_decisions(self.client, decisions, mode)
                proposed += len(decisions)
                for decision in decisions:
                    _counted(decision.policy.name, decision.country, decision.action_id, decision.outcome, mode,
                             reason=decision.reason)
                    history.append(PastAction(decision.action_id, decision.policy.name, decision.country,
                                              decision.outcome, now))
        if proposed:  # the new proposals move on in this same pass
            actions = read_actions(self.client, now - LOOK_BACK)
        for action in actions:
            policy = self.policies.get(action.policy)
            about = incidents.get(action.incident_id)
            if policy is None or about is None:
                continue  # a policy since removed, or an incident out of sight: leave it as recorded
            self._advance(action, policy, about, now)

    def _record(self, action: ActionState, step: Step, now: datetime, detail: str = "",
                response: dict[str, Any] | None = None) -> None:
        record_step(self.client, action, step, now, detail=detail, response=response)
        _counted(action.policy, action.country, action.action_id, step, action.mode, detail=detail)

    def _send(self, request: dict[str, Any], key: uuid.UUID, mode: Mode) -> Outcome:
        if mode != "live":
            return Outcome(True, None, {"dry_run": "not sent"}, 0)
        if "kafka" in request:
            if self.commands is None:
                return Outcome(False, None, None, 0, "no Kafka cluster configured for command actions")
            return self.commands.send(request, key)
        if self.shop is None:
            return Outcome(False, None, None, 0, "no shop admin API configured (SHOPPULSE_SHOP_ADMIN_URL)")
        return self.shop.send(request, key)

    def _await_approval(self, action: ActionState, policy: Policy, incident: IncidentFacts, now: datetime) -> None:
        expiry = expires_at(action, policy)
        assert expiry is not None and policy.approval is not None
        if now >= expiry:
            self.ask_again_at.pop(action.action_id, None)
            self._record(action, "expired", now, f"no approval within {policy.approval.expires_after}")
            close_request(self.slack, action, policy, f"expired: no approval within {policy.approval.expires_after}")
            return
        again = self.ask_again_at.get(action.action_id)
        if action.latest == "proposed" and self.slack is not None and (again is None or now >= again):
            try:
                where = self.slack.ask(action, policy, incident, f"{expiry:%H:%M} UTC")
            except SlackError as exc:  # asked again after Slack's Retry-After (or a minute); the CLI and links answer
                self.ask_again_at[action.action_id] = now + timedelta(seconds=exc.retry_after)
                log.warning("approval request not posted", extra={"action_id": str(action.action_id),
                                                                  "error": str(exc), "retry_after_s": exc.retry_after})
                return
            self.ask_again_at.pop(action.action_id, None)
            self._record(action, "approval_requested", now, f"asked in Slack ({where['channel']})", where)

    def _advance(self, action: ActionState, policy: Policy, incident: IncidentFacts, now: datetime) -> None:
        approval = policy.approval
        needs_approval = approval is not None and approval.required and action.mode == "live"
        if action.awaiting_approval and needs_approval:
            self._await_approval(action, policy, incident, now)
            return
        if action.latest in {"proposed", "approval_requested", "approved"}:
            if self.kill_switch or not policy.enabled:
                return  # nothing new runs while a kill switch is on (an unapproved proposal still expires)
            outcome = self._send(action.request, action.action_id, action.mode)
            self._record(action, "executed" if outcome.ok else "failed", now,
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
            outcome = self._send(action.rollback, rollback_key(action.action_id), action.mode)
            self._record(action, "rolled_back" if outcome.ok else "failed", now,
                         f"rolled back: {why}" if outcome.ok else f"rollback failed: {outcome.error}",
                         outcome.as_record())
