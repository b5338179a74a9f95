"""An approver's answer to a proposed action, however it arrives (Slack button, signed link, CLI).

Only a proposal still awaiting approval can be answered, only by someone who answers as one of its
policy's approvers, and only before it expires; the answer is appended to the audit with who gave it
and how. A process takes its answers one at a time, so a click delivered twice records one answer
and tells the second it came too late (answers from two processes at once, say the CLI and a click,
may both be recorded; the action still runs once, under its idempotency key). Once answered, the
Slack request (if there is one) says so in place of its buttons.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from clickhouse_connect.driver.client import Client
from prometheus_client import Counter

from shoppulse.actions.audit import ActionState, Step, read_actions, record_step
from shoppulse.actions.policy import Policy, parse_minutes
from shoppulse.actions.slack import SlackApprovals, SlackError

log = logging.getLogger(__name__)

LOOK_BACK = timedelta(days=1)  # older proposals have long expired
ANSWERS = Counter("shoppulse_actions_answers", "Approvers' answers to proposed actions", ["channel", "outcome"])
_one_at_a_time = threading.Lock()


@dataclass(frozen=True)
class Answer:
    recorded: bool
    said: str  # what happened, in words (for the approver)
    action: ActionState | None = None
    policy: Policy | None = None


def expires_at(action: ActionState, policy: Policy) -> datetime | None:
    if policy.approval is None:
        return None
    return action.proposed_at + parse_minutes(policy.approval.expires_after)


def answer(client: Client, policies: Sequence[Policy], action_id: uuid.UUID, approve: bool, now: datetime,
           actor: str, answers_as: Callable[[list[str]], str | None], channel: str) -> Answer:
    """Record ``actor``'s answer if it may be given; ``answers_as`` says which listed approver the actor
    is (None: none of them)."""
    with _one_at_a_time:
        found = read_actions(client, now - LOOK_BACK, action_id)
        result = _answer(client, policies, found, action_id, approve, now, actor, answers_as, channel)
    ANSWERS.labels(channel, "recorded" if result.recorded else "refused").inc()
    log.info("action answer", extra={"action_id": str(action_id), "actor": actor, "channel": channel,
                                     "recorded": result.recorded, "said": result.said})
    return result


def _answer(client: Client, policies: Sequence[Policy], found: list[ActionState], action_id: uuid.UUID,
            approve: bool, now: datetime, actor: str, answers_as: Callable[[list[str]], str | None],
            channel: str) -> Answer:
    if not found:
        return Answer(False, f"no action {action_id} was proposed in the last {LOOK_BACK}")
    action = found[0]
    policy = {p.name: p for p in policies}.get(action.policy)
    if policy is None or policy.approval is None or not policy.approval.required:
        return Answer(False, f"action {action_id} ({action.policy}) needs no approval", action, policy)
    if not action.awaiting_approval:
        return Answer(False, f"action {action_id} is {action.latest}, not awaiting approval", action, policy)
    approver = answers_as(policy.approval.approvers)
    if approver is None:
        return Answer(False, f"{actor} may not approve {policy.name} "
                             f"(approvers: {', '.join(policy.approval.approvers)})", action, policy)
    expiry = expires_at(action, policy)
    if expiry is not None and now >= expiry:
        return Answer(False, f"action {action_id} expired ({policy.approval.expires_after} after its proposal)",
                      action, policy)
    step: Step = "approved" if approve else "rejected"
    how = f"{channel}, as {approver}" if approver != actor else channel
    record_step(client, action, step, now, actor=actor, detail=f"{step} via {how}")
    return Answer(True, f"action {action_id} {step} by {actor}", action, policy)


def as_listed(approver: str) -> Callable[[list[str]], str | None]:
    """``answers_as`` for someone who names the approver they answer as (the CLI's --as, a signed link):
    that approver, if the policy lists it."""
    return lambda approvers: approver if approver in approvers else None


def announce(slack: SlackApprovals | None, result: Answer, approve: bool, who: str, at: datetime) -> None:
    """Tell in Slack what became of a recorded answer: the request's buttons make way for it."""
    if result.recorded and result.action is not None and result.policy is not None:
        close_request(slack, result.action, result.policy,
                      f"{'approved' if approve else 'rejected'} by {who} at {at:%H:%M} UTC")


def close_request(slack: SlackApprovals | None, action: ActionState, policy: Policy, outcome: str) -> None:
    """Replace the Slack request's buttons with the outcome (nothing when it was not asked in Slack)."""
    where = action.response("approval_requested")
    if slack is None or not where:
        return
    try:
        slack.close(where, action, policy, outcome)
    except SlackError as exc:  # the answer is recorded; the message keeps its buttons, and a click is refused
        log.warning("slack request not closed", extra={"action_id": str(action.action_id), "error": str(exc)})
