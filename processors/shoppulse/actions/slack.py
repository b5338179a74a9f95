"""Approvals in Slack: the request with Approve / Reject buttons, and the clicks that answer it.

Written against Slack's published Web API and interactivity contract (the OpenAPI description in
``slackapi/slack-api-specs`` and the docs it points to):

- ``chat.postMessage`` / ``chat.update`` with a bot token (``Authorization: Bearer xoxb-…``, scope
  ``chat:write``), a JSON body (``application/json; charset=utf-8``) and Block Kit blocks; Slack
  answers HTTP 200 with ``{"ok": false, "error": …}`` on a refusal and 429 with ``Retry-After``
  when rate limited;
- ``usergroups.users.list`` (scope ``usergroups:read``) for approvers named by user group (``S…``);
- a click is POSTed to the app's Request URL as ``application/x-www-form-urlencoded`` with one
  ``payload`` field (JSON, ``type: block_actions``), signed: ``X-Slack-Signature`` is ``v0=`` and the
  hex HMAC-SHA256 of ``v0:<X-Slack-Request-Timestamp>:<raw body>`` under the app's signing secret.
  A request older than five minutes is refused (Slack's advice against replays); the app acknowledges
  with HTTP 200 within three seconds, and says what happened in the message itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import requests
from prometheus_client import Counter

from shoppulse.actions.audit import ActionState
from shoppulse.actions.decide import IncidentFacts
from shoppulse.actions.policy import Policy
from shoppulse.http_json import RefusedError

log = logging.getLogger(__name__)

MAX_AGE_S = 300
APPROVE, REJECT = "shoppulse_approve", "shoppulse_reject"
SECTION_TEXT_MAX = 3000  # Block Kit: a section's text
CALLS = Counter("shoppulse_actions_slack_calls", "Slack Web API calls of the actions processor", ["method", "outcome"])


class SlackError(Exception):
    """Slack refused a call, or did not answer; the message says which and what to do. ``retry_after``:
    the seconds Slack asked to wait (its 429's Retry-After), else how long a retry should wait."""

    def __init__(self, message: str, retry_after: float = 60.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InteractionError(RefusedError):
    """A request to the interactivity endpoint that is not a genuine, fresh Slack click."""


@dataclass(frozen=True)
class Click:
    """One click on an approval button: who, which answer, on which action, and where the message is."""

    user_id: str
    user_name: str
    approve: bool
    action_id: uuid.UUID
    channel: str
    message_ts: str
    response_url: str


class SlackApprovals:
    """Slack's Web API for approval requests: one bot token, one channel, the app's signing secret."""

    def __init__(self, token: str, channel: str, signing_secret: str | None, api_url: str = "https://slack.com/api",
                 timeout_s: float = 10.0, session: requests.Session | None = None) -> None:
        self._token = token
        self.channel = channel
        self.signing_secret = signing_secret
        self._api = api_url.rstrip("/")
        self._timeout_s = timeout_s
        self._session = session or requests.Session()

    def _call(self, method: str, body: dict[str, Any] | None = None, query: dict[str, str] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            if body is None:
                answer = self._session.get(f"{self._api}/{method}", params=query, headers=headers,
                                           timeout=self._timeout_s)
            else:
                answer = self._session.post(f"{self._api}/{method}", data=json.dumps(body).encode(),
                                            headers={**headers, "Content-Type": "application/json; charset=utf-8"},
                                            timeout=self._timeout_s)
        except requests.RequestException as exc:
            CALLS.labels(method, "no_answer").inc()
            raise SlackError(f"Slack's {method} did not answer ({type(exc).__name__})") from exc
        if answer.status_code == 429:
            CALLS.labels(method, "rate_limited").inc()
            wait = answer.headers.get("Retry-After", "")
            raise SlackError(f"Slack rate-limits {method} (retry after {wait or '?'} s)",
                             float(wait) if wait.isdigit() else 60.0)
        try:
            result = answer.json()
        except ValueError as exc:
            CALLS.labels(method, "bad_answer").inc()
            raise SlackError(f"Slack's {method} answered HTTP {answer.status_code} without JSON") from exc
        if not isinstance(result, dict) or result.get("ok") is not True:
            error = result.get("error") if isinstance(result, dict) else None
            CALLS.labels(method, "refused").inc()
            raise SlackError(f"Slack refused {method}: {error or answer.status_code}{_advice(str(error))}")
        CALLS.labels(method, "ok").inc()
        return result

    def ask(self, action: ActionState, policy: Policy, incident: IncidentFacts, expires_at: str) -> dict[str, str]:
        """Post the approval request; returns where it is (``channel``, ``ts``) for the audit."""
        text = f"Approval needed: {policy.name} in {action.country} (expires {expires_at})"
        answer = self._call("chat.postMessage", {"channel": self.channel, "text": text,
                                                 "blocks": request_blocks(action, policy, incident, expires_at),
                                                 "unfurl_links": False})
        return {"channel": str(answer["channel"]), "ts": str(answer["ts"])}

    def close(self, where: dict[str, Any], action: ActionState, policy: Policy, outcome: str) -> None:
        """Replace the request's buttons with what became of it (approved by…, rejected by…, expired)."""
        text = f"{policy.name} in {action.country}: {outcome}"
        self._call("chat.update", {"channel": where["channel"], "ts": where["ts"], "text": text,
                                   "blocks": [_section(f"*{policy.name}* in {action.country}: {outcome}"),
                                              _context(f"action {action.action_id}")]})

    def tell(self, click: Click, text: str) -> None:
        """Tell only the person who clicked (the interaction's ``response_url``, an ephemeral message)."""
        try:
            self._session.post(click.response_url, json={"response_type": "ephemeral", "replace_original": False,
                                                         "text": text}, timeout=self._timeout_s)
        except requests.RequestException as exc:
            log.warning("slack response_url did not answer", extra={"error": type(exc).__name__})

    def members(self, usergroup: str) -> set[str]:
        """The users of a Slack user group (``S…``)."""
        answer = self._call("usergroups.users.list", query={"usergroup": usergroup})
        return {str(user) for user in answer.get("users") or []}

    def qualifies(self, user_id: str, approvers: list[str]) -> str | None:
        """The approver entry ``user_id`` answers as: the user listed, or a listed group it belongs to."""
        if user_id in approvers:
            return user_id
        for group in (a for a in approvers if a.startswith("S")):
            if user_id in self.members(group):
                return group
        return None

    def click(self, headers: dict[str, str], body: bytes, now: float | None = None) -> Click:
        """A genuine, fresh click on one of our buttons, or InteractionError saying why not."""
        verify_signature(self.signing_secret, headers, body, time.time() if now is None else now)
        return parse_click(body)


def _advice(error: str) -> str:
    return {"not_authed": ": set SLACK_BOT_TOKEN", "invalid_auth": ": SLACK_BOT_TOKEN is not a valid bot token",
            "channel_not_found": ": SHOPPULSE_ACTIONS_SLACK_CHANNEL names no channel the bot can see",
            "not_in_channel": ": invite the bot to the approval channel",
            "missing_scope": ": give the Slack app the chat:write and usergroups:read scopes"}.get(error, "")


def _section(text: str) -> dict[str, Any]:
    if len(text) > SECTION_TEXT_MAX:
        text = text[:SECTION_TEXT_MAX - 1] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _call_text(call: dict[str, Any]) -> str:
    http = call.get("http")
    if http:
        return f"`{http['method']} {http['path']}` `{json.dumps(http['body'], sort_keys=True)}`"
    kafka = call.get("kafka") or {}
    return f"command on `{kafka.get('topic')}` `{json.dumps(kafka.get('message'), sort_keys=True)}`"


def request_blocks(action: ActionState, policy: Policy, incident: IncidentFacts,
                   expires_at: str) -> list[dict[str, Any]]:
    """The approval request: what happened, what would run and how it is undone, two buttons."""
    value = str(action.action_id)
    confirm = {"title": {"type": "plain_text", "text": "Run this action?"},
               "text": {"type": "mrkdwn", "text": f"{policy.name} in {action.country} runs against the live shop."},
               "confirm": {"type": "plain_text", "text": "Approve"}, "deny": {"type": "plain_text", "text": "Cancel"}}
    return [
        {"type": "header", "text": {"type": "plain_text", "text": f"Approve {policy.name} in {action.country}?"[:150]}},
        _section(incident.story or f"{incident.kind} in {', '.join(incident.countries)}"),
        _section(f"*Runs:* {_call_text(action.request)}\n*Undone by:* {_call_text(action.rollback)}"),
        _context(f"expires {expires_at} · action {value} · incident {incident.incident_id}"),
        {"type": "actions", "block_id": "shoppulse_approval", "elements": [
            {"type": "button", "action_id": APPROVE, "value": value, "style": "primary", "confirm": confirm,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": REJECT, "value": value, "style": "danger",
             "text": {"type": "plain_text", "text": "Reject"}}]},
    ]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's request signature (v0) of ``body`` sent at ``timestamp``."""
    return "v0=" + hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | None, headers: dict[str, str], body: bytes, now: float) -> None:
    lowered = {k.lower(): v for k, v in headers.items()}
    if not secret:
        raise InteractionError(503, "SLACK_SIGNING_SECRET is not set: every Slack interaction is refused")
    stamp = lowered.get("x-slack-request-timestamp", "")
    if not stamp.isdigit():
        raise InteractionError(401, "no X-Slack-Request-Timestamp: not a request from Slack")
    if abs(now - int(stamp)) > MAX_AGE_S:
        raise InteractionError(401, f"the request is {abs(now - int(stamp)):.0f} s old (at most {MAX_AGE_S}): a replay")
    if not hmac.compare_digest(lowered.get("x-slack-signature", ""), sign(secret, stamp, body)):
        raise InteractionError(401, "the X-Slack-Signature does not match the signing secret")


def parse_click(body: bytes) -> Click:
    try:
        form = parse_qs(body.decode(), strict_parsing=True)
        payload: Any = json.loads(form["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError) as exc:
        raise InteractionError(400, "not a Slack interaction (a form with one JSON payload field)") from exc
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        raise InteractionError(400, "only block_actions interactions (button clicks) are taken here")
    try:
        [pressed] = [a for a in payload["actions"] if a.get("action_id") in (APPROVE, REJECT)]
        user, container = payload["user"], payload["container"]
        return Click(str(user["id"]), str(user.get("username") or user.get("name") or user["id"]),
                     pressed["action_id"] == APPROVE, uuid.UUID(str(pressed["value"])),
                     str(container["channel_id"]), str(container["message_ts"]), str(payload["response_url"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InteractionError(400, "a block_actions payload without one approval button, user, container "
                                    "or response_url") from exc
