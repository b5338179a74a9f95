"""Signed, expiring approve / reject links: the fallback to Slack's buttons (e-mail, a pager, a chat
without the app).

A link names the action, the answer, the approver it answers as and when it expires, and carries an
HMAC-SHA256 of those four under ``SHOPPULSE_ACTIONS_LINK_SECRET``: changing any of them breaks the
signature, and a link past its expiry (the proposal's own) is refused. Opening a link only shows
what would run, with a button: the answer is a POST, so a mail scanner or a chat's link preview
that fetches the URL answers nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from shoppulse.http_json import RefusedError

ANSWER_PATH = "/actions/answer"


class LinkError(RefusedError):
    """A link that is not ours, was altered, or has expired; ``status`` is the HTTP answer."""


@dataclass(frozen=True)
class SignedAnswer:
    action_id: uuid.UUID
    approve: bool
    approver: str
    expires: int  # Unix seconds


def _signature(secret: str, action_id: uuid.UUID, approve: bool, approver: str, expires: int) -> str:
    message = f"{action_id}\n{'approve' if approve else 'reject'}\n{approver}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def answer_link(secret: str, base_url: str, action_id: uuid.UUID, approve: bool, approver: str,
                expires: datetime) -> str:
    """The URL that answers ``action_id`` as ``approver`` until ``expires``."""
    stamp = int(expires.timestamp())
    query = {"action": str(action_id), "answer": "approve" if approve else "reject", "as": approver,
             "expires": str(stamp), "sig": _signature(secret, action_id, approve, approver, stamp)}
    return f"{base_url.rstrip('/')}{ANSWER_PATH}?{urlencode(query)}"


def verify_link(secret: str | None, fields: dict[str, str], now: datetime | None = None) -> SignedAnswer:
    """The answer a link's fields carry, if the link is ours, unaltered and not expired."""
    if not secret:
        raise LinkError(503, "SHOPPULSE_ACTIONS_LINK_SECRET is not set: approval links are refused")
    try:
        action_id = uuid.UUID(fields["action"])
        approve = {"approve": True, "reject": False}[fields["answer"]]
        approver, expires, signature = fields["as"], int(fields["expires"]), fields["sig"]
    except (KeyError, ValueError) as exc:
        raise LinkError(400, "not an approval link (action, answer, as, expires and sig are required)") from exc
    if not hmac.compare_digest(signature, _signature(secret, action_id, approve, approver, expires)):
        raise LinkError(403, "the link's signature does not match: it was altered or is not ours")
    moment = datetime.now(UTC) if now is None else now
    if moment.timestamp() >= expires:
        raise LinkError(410, f"the link expired at {datetime.fromtimestamp(expires, UTC):%Y-%m-%d %H:%M} UTC")
    return SignedAnswer(action_id, approve, approver, expires)
