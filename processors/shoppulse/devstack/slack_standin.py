"""A stand-in for Slack, for tests: the Web API methods approvals use and the button clicks Slack sends
back, over real sockets, refusing what Slack refuses.

Mirrors Slack's Web API as its OpenAPI description (``slackapi/slack-api-specs``,
``web-api/slack_web_openapi_v2.json``) and the Block Kit and interactivity references describe it:

- ``chat.postMessage``, ``chat.update`` (scope ``chat:write``), ``usergroups.users.list`` (scope
  ``usergroups:read``); a refusal is HTTP 200 with ``{"ok": false, "error": …}``: ``not_authed``
  without a token, ``invalid_auth`` with a wrong one, ``missing_scope``, ``channel_not_found``,
  ``not_in_channel``, ``no_text``, ``msg_too_long``, ``invalid_blocks``, ``message_not_found``,
  ``no_such_subteam``; a JSON body without ``charset`` is taken with the ``missing_charset``
  warning; ``rate_limit_next`` answers 429 with ``Retry-After``;
- Block Kit limits checked on every message: at most 50 blocks; header (plain_text, 150), section
  (3,000), context (10 elements), actions (25 elements) and divider blocks; buttons with plain_text
  of at most 75 characters, ``action_id`` (255) unique in the message, ``value`` (2,000), ``style``
  primary or danger, and a confirm dialog's title (100), text (300), confirm and deny (30);
- ``click`` is a person pressing a button of a message as it is now: Slack POSTs a ``block_actions``
  payload as the form field ``payload`` to the app's Request URL, signed with ``X-Slack-Signature``
  (``v0=`` HMAC-SHA256 of ``v0:timestamp:body`` under the signing secret) and
  ``X-Slack-Request-Timestamp``; the ``response_url`` it carries takes ephemeral replies.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests

from shoppulse.devstack.http_standin import StandinServer, serving
from shoppulse.http_json import answer_json

BLOCK_TYPES = frozenset({"header", "section", "context", "actions", "divider"})
TEXT_MAX = 40_000


class BlockError(ValueError):
    pass


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    updates: int = 0


@dataclass
class SlackState:
    token: str
    signing_secret: str
    channels: dict[str, bool]  # channel id -> whether the bot is a member
    usergroups: dict[str, list[str]]
    scopes: set[str] = field(default_factory=lambda: {"chat:write", "usergroups:read"})
    request_url: str | None = None  # the app's interactivity Request URL
    messages: dict[tuple[str, str], Message] = field(default_factory=dict)
    ephemeral: list[dict[str, Any]] = field(default_factory=list)  # replies through response_url
    warnings: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    rate_limit_next: int = 0
    base_url: str = ""
    clock: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def click(self, channel: str, ts: str, action_id: str, user_id: str, user_name: str = "",
              signing_secret: str | None = None, sent_at: float | None = None,
              deliveries: int = 1) -> requests.Response:
        """``user_id`` presses the button ``action_id`` of the message as it is now; returns the app's answer
        (``deliveries``: the same signed request sent that many times, as an at-least-once delivery may)."""
        message = self.messages[(channel, ts)]
        buttons = [(block.get("block_id", ""), element) for block in message.blocks if block["type"] == "actions"
                   for element in block["elements"] if element.get("type") == "button"]
        found = [(block_id, e) for block_id, e in buttons if e.get("action_id") == action_id]
        if not found:
            has = [e.get("action_id") for _, e in buttons]
            raise LookupError(f"the message has no button {action_id} (it has {has})")
        block_id, button = found[0]
        if self.request_url is None:
            raise LookupError("the app has no interactivity Request URL")
        payload = {
            "type": "block_actions", "api_app_id": "A0SHOPPULSE", "token": "deprecated-verification-token",
            "team": {"id": "T0SHOP", "domain": "shop"}, "trigger_id": f"{next(self.clock)}.trigger",
            "user": {"id": user_id, "username": user_name or user_id.lower(), "name": user_name or user_id.lower(),
                     "team_id": "T0SHOP"},
            "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
            "channel": {"id": channel, "name": "approvals"},
            "message": {"type": "message", "ts": ts, "text": message.text, "blocks": message.blocks},
            "response_url": f"{self.base_url}/actions/response/{channel}/{ts}",
            "actions": [{"type": "button", "action_id": action_id, "block_id": block_id,
                         "value": button.get("value", ""), "text": button["text"],
                         "action_ts": f"{time.time():.6f}"}],
        }
        body = urlencode({"payload": json.dumps(payload)}).encode()
        stamp = str(int(time.time() if sent_at is None else sent_at))
        secret = self.signing_secret if signing_secret is None else signing_secret
        signature = "v0=" + hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": stamp,
                   "X-Slack-Signature": signature, "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}
        answers = [requests.post(self.request_url, data=body, timeout=10, headers=headers) for _ in range(deliveries)]
        return answers[-1]


def _plain(obj: Any, most: int, where: str) -> None:
    if not isinstance(obj, dict) or obj.get("type") != "plain_text" or not isinstance(obj.get("text"), str):
        raise BlockError(f"{where} must be a plain_text object")
    if not 1 <= len(obj["text"]) <= most:
        raise BlockError(f"{where} must be 1 to {most} characters")


def _text(obj: Any, most: int, where: str) -> None:
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn") or not isinstance(
            obj.get("text"), str):
        raise BlockError(f"{where} must be a text object")
    if not 1 <= len(obj["text"]) <= most:
        raise BlockError(f"{where} must be 1 to {most} characters")


def _button(element: dict[str, Any], where: str, action_ids: set[str]) -> None:
    _plain(element.get("text"), 75, f"{where}.text")
    action_id = element.get("action_id")
    if action_id is not None:
        if not isinstance(action_id, str) or not 1 <= len(action_id) <= 255:
            raise BlockError(f"{where}.action_id must be 1 to 255 characters")
        if action_id in action_ids:
            raise BlockError(f"{where}.action_id {action_id} is not unique")
        action_ids.add(action_id)
    if "value" in element and (not isinstance(element["value"], str) or len(element["value"]) > 2000):
        raise BlockError(f"{where}.value must be a string of at most 2000 characters")
    if element.get("style") not in (None, "primary", "danger"):
        raise BlockError(f"{where}.style must be primary or danger")
    confirm = element.get("confirm")
    if confirm is not None:
        _plain(confirm.get("title"), 100, f"{where}.confirm.title")
        _text(confirm.get("text"), 300, f"{where}.confirm.text")
        _plain(confirm.get("confirm"), 30, f"{where}.confirm.confirm")
        _plain(confirm.get("deny"), 30, f"{where}.confirm.deny")


def check_blocks(blocks: Any) -> None:
    """Refuse what Block Kit refuses (BlockError with the path, like Slack's invalid_blocks)."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        raise BlockError("blocks must be an array of at most 50 blocks")
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    for index, block in enumerate(blocks):
        where = f"[{index}]"
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            raise BlockError(f"{where} is not a supported block")
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not 1 <= len(block_id) <= 255 or block_id in block_ids:
                raise BlockError(f"{where}.block_id must be unique and 1 to 255 characters")
            block_ids.add(block_id)
        kind = block["type"]
        if kind == "header":
            _plain(block.get("text"), 150, f"{where}.text")
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                raise BlockError(f"{where} needs text or fields")
            if "text" in block:
                _text(block["text"], 3000, f"{where}.text")
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                raise BlockError(f"{where}.elements must hold 1 to 10 elements")
            for i, element in enumerate(elements):
                _text(element, 3000, f"{where}.elements[{i}]")
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                raise BlockError(f"{where}.elements must hold 1 to 25 elements")
            for i, element in enumerate(elements):
                if not isinstance(element, dict) or element.get("type") != "button":
                    raise BlockError(f"{where}.elements[{i}] is not an element this stand-in knows")
                _button(element, f"{where}.elements[{i}]", action_ids)


class _Handler(BaseHTTPRequestHandler):
    server: StandinServer[SlackState]

    def log_message(self, *_args: Any) -> None:  # quiet in tests
        pass

    def _fields(self) -> tuple[dict[str, Any], list[str]] | None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        kind = self.headers.get("Content-Type", "")
        if kind.startswith("application/json"):
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                answer_json(self, 200, {"ok": False, "error": "invalid_json"})
                return None
            if not isinstance(body, dict):
                answer_json(self, 200, {"ok": False, "error": "json_not_object"})
                return None
            return body, ([] if "charset" in kind else ["missing_charset"])
        fields: dict[str, Any] = dict(parse_qsl(raw.decode("utf-8", "replace")))
        if isinstance(fields.get("blocks"), str):
            try:
                fields["blocks"] = json.loads(fields["blocks"])
            except ValueError:
                fields["blocks"] = None
        return {**dict(parse_qsl(urlsplit(self.path).query)), **fields}, []

    def _authorized(self, scope: str) -> bool:
        state = self.server.state
        auth = self.headers.get("Authorization")
        error = None
        if not auth:
            error = "not_authed"
        elif auth != f"Bearer {state.token}":
            error = "invalid_auth"
        elif scope not in state.scopes:
            error = "missing_scope"
        if error:
            answer_json(self, 200, {"ok": False, "error": error, "needed": scope if error == "missing_scope" else None})
        return error is None

    def do_GET(self) -> None:
        self._method({**dict(parse_qsl(urlsplit(self.path).query))}, [])

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        state = self.server.state
        if path.startswith("/actions/response/"):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            with state.lock:
                state.ephemeral.append(body)
            answer_json(self, 200, {"ok": True})
            return
        parsed = self._fields()
        if parsed is not None:
            self._method(*parsed)

    def _method(self, fields: dict[str, Any], warnings: list[str]) -> None:
        state = self.server.state
        method = urlsplit(self.path).path.removeprefix("/api/")
        with state.lock:
            state.calls.append(method)
            if state.rate_limit_next:
                state.rate_limit_next -= 1
                self.send_response(429)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        handlers = {"chat.postMessage": ("chat:write", self._post), "chat.update": ("chat:write", self._update),
                    "usergroups.users.list": ("usergroups:read", self._members)}
        if method not in handlers:
            answer_json(self, 404, {"ok": False, "error": "unknown_method"})
            return
        scope, handler = handlers[method]
        if not self._authorized(scope):
            return
        result = handler(fields)
        if warnings and result.get("ok"):
            state.warnings.extend(warnings)
            result = {**result, "warning": ",".join(warnings), "response_metadata": {"warnings": warnings}}
        answer_json(self, 200, result)

    def _message_fields(self, fields: dict[str, Any]) -> dict[str, Any] | None:
        text, blocks = fields.get("text"), fields.get("blocks")
        if not text and not blocks:
            return {"ok": False, "error": "no_text"}
        if isinstance(text, str) and len(text) > TEXT_MAX:
            return {"ok": False, "error": "msg_too_long"}
        if blocks is not None:
            try:
                check_blocks(blocks)
            except BlockError as exc:
                return {"ok": False, "error": "invalid_blocks", "errors": [str(exc)]}
        return None

    def _post(self, fields: dict[str, Any]) -> dict[str, Any]:
        state = self.server.state
        channel = fields.get("channel")
        if channel not in state.channels:
            return {"ok": False, "error": "channel_not_found"}
        if not state.channels[channel]:
            return {"ok": False, "error": "not_in_channel"}
        refused = self._message_fields(fields)
        if refused:
            return refused
        with state.lock:
            ts = f"{1_800_000_000 + next(state.clock)}.000100"
            message = Message(channel, ts, str(fields.get("text") or ""), list(fields.get("blocks") or []))
            state.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": {"type": "message", "text": message.text,
                                                                      "ts": ts, "blocks": message.blocks}}

    def _update(self, fields: dict[str, Any]) -> dict[str, Any]:
        state = self.server.state
        channel, ts = fields.get("channel"), fields.get("ts")
        if channel not in state.channels:
            return {"ok": False, "error": "channel_not_found"}
        message = state.messages.get((str(channel), str(ts)))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        refused = self._message_fields(fields)
        if refused:
            return refused
        with state.lock:
            message.text = str(fields.get("text") or message.text)
            message.blocks = list(fields.get("blocks") or [])
            message.updates += 1
        return {"ok": True, "channel": channel, "ts": ts, "text": message.text}

    def _members(self, fields: dict[str, Any]) -> dict[str, Any]:
        group = fields.get("usergroup")
        if group not in self.server.state.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(self.server.state.usergroups[group])}


@contextlib.contextmanager
def slack_standin(token: str, signing_secret: str, channels: dict[str, bool],
                  usergroups: dict[str, list[str]]) -> Iterator[tuple[str, SlackState]]:
    """A running Slack stand-in; yields its Web API base URL (``…/api``) and its state."""
    state = SlackState(token, signing_secret, channels, usergroups)
    with serving(state, _Handler) as url:
        state.base_url = url
        yield f"{url}/api", state
