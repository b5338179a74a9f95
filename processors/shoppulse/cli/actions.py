"""``shoppulse actions …``: automated actions with guardrails (policies in actions/)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from shoppulse.actions.policy import Policy, PolicyError, check_policies, load_policies, policy_files
from shoppulse.cli.common import console, fail, run_processor, settings_or_fail, stop_event_on_signals
from shoppulse.project_files import actions_dir

actions_app = typer.Typer(help="Automated actions with guardrails (actions/).", no_args_is_help=True)


@actions_app.command("lint")
def lint_command(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Action policy files (default: every *.yaml in actions/).")] = None,
) -> None:
    """Check the action policies: the format, known incident kinds and placeholders, and the guardrails
    every policy must have (a rollback, a rate limit, approvers for an approval, known conflicts)."""
    files = paths or policy_files(actions_dir())
    if not files:
        fail(f"no action policies (*.yaml in {actions_dir()}): pass files, or set SHOPPULSE_HOME to the "
             "repository that holds actions/", 2)
    missing = [p for p in files if not p.is_file()]
    if missing:
        fail(f"no such policy file: {', '.join(map(str, missing))}", 2)
    policies, problems = check_policies(files)
    for problem in problems:
        console.print(str(problem), highlight=False, markup=False)
    summary = f"{len(files)} file(s), {len(policies)} well-formed polic{'y' if len(policies) == 1 else 'ies'}"
    if problems:
        fail(f"{len(problems)} problem(s) in {summary}")
    console.print(f"[green]ok[/]: {summary}", highlight=False)


def action_policies_or_fail() -> list[Policy]:
    """The action policies a dry run applies (none when actions/ holds none); a policy the lint would
    fail stops the command."""
    try:
        return load_policies(actions_dir())
    except PolicyError as exc:
        fail(f"{exc}\nfix these first (shoppulse actions lint)", 2)


@actions_app.command("run")
def run_command() -> None:
    """The actions processor: incidents to audited proposals, approvals, executions and rollbacks, as the
    policies in actions/ say (dry run unless a policy is live)."""
    from shoppulse.actions.main import run
    from shoppulse.actions.policy import PolicyError

    run_processor(lambda settings: run(settings, stop_event_on_signals()), PolicyError)


def _action_id(action_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(action_id)
    except ValueError:
        fail(f"{action_id!r} is not an action id (a UUID, as the proposal and the audit table show it)", 2)


def _answer(action_id: str, approver: str, approve: bool) -> None:
    from shoppulse import clickhouse
    from shoppulse.actions.approvals import announce, answer, as_listed
    from shoppulse.actions.main import slack_approvals

    key = _action_id(action_id)
    policies = action_policies_or_fail()
    settings = settings_or_fail()
    now = datetime.now(UTC)
    result = answer(clickhouse.connect(settings), policies, key, approve, now, approver, as_listed(approver), "cli")
    if not result.recorded:
        fail(result.said)
    announce(slack_approvals(settings), result, approve, f"{approver} (command line)", now)
    console.print(result.said, highlight=False)


@actions_app.command("approve")
def approve_command(
    action_id: Annotated[str, typer.Argument(help="The proposed action's id.")],
    approver: Annotated[str, typer.Option("--as", help="Your approver id, as the policy lists it.")],
) -> None:
    """Approve a proposed action (the fallback to the Slack buttons)."""
    _answer(action_id, approver, True)


@actions_app.command("reject")
def reject_command(
    action_id: Annotated[str, typer.Argument(help="The proposed action's id.")],
    approver: Annotated[str, typer.Option("--as", help="Your approver id, as the policy lists it.")],
) -> None:
    """Reject a proposed action: it never runs."""
    _answer(action_id, approver, False)


@actions_app.command("link")
def link_command(
    action_id: Annotated[str, typer.Argument(help="The proposed action's id.")],
    approver: Annotated[str, typer.Option("--as", help="The approver the links answer as, as the policy lists it.")],
) -> None:
    """Print signed approve and reject links for a proposal awaiting approval (valid until it expires),
    to send to an approver who has no Slack or shell at hand."""
    from shoppulse import clickhouse
    from shoppulse.actions.approvals import LOOK_BACK, expires_at
    from shoppulse.actions.audit import read_actions
    from shoppulse.actions.links import answer_link

    key = _action_id(action_id)
    settings = settings_or_fail()
    if not (settings.actions_link_secret and settings.actions_public_url):
        fail("set SHOPPULSE_ACTIONS_LINK_SECRET (the processor's, to sign) and SHOPPULSE_ACTIONS_PUBLIC_URL (where "
             "approvers reach the processor's endpoint, e.g. https://actions.example.com)", 2)
    now = datetime.now(UTC)
    found = read_actions(clickhouse.connect(settings), now - LOOK_BACK, key)
    policy = {p.name: p for p in action_policies_or_fail()}.get(found[0].policy) if found else None
    if not found or policy is None or policy.approval is None or not found[0].awaiting_approval:
        fail(f"action {action_id} is not awaiting approval" + (f" (it is {found[0].latest})" if found else ""))
    if approver not in policy.approval.approvers:
        fail(f"{approver} may not approve {policy.name} (approvers: {', '.join(policy.approval.approvers)})", 2)
    expiry = expires_at(found[0], policy)
    assert expiry is not None and settings.actions_link_secret and settings.actions_public_url
    if now >= expiry:
        fail(f"action {action_id} has expired")
    for approve in (True, False):
        link = answer_link(settings.actions_link_secret, settings.actions_public_url, key, approve, approver, expiry)
        console.print(f"{'approve' if approve else 'reject'}: {link}", highlight=False, soft_wrap=True)
    console.print(f"valid until {expiry:%Y-%m-%d %H:%M} UTC", highlight=False)
