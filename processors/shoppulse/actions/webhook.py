"""Grafana's webhook contact point as a trigger of the actions processor.

Grafana (its alerting's webhook notifier, ``github.com/grafana/alerting``: ``receivers/webhook/v1``
and ``http/hmac.go``) POSTs a JSON notification — ``version`` "1", ``status``, ``alerts`` with their
``labels`` — and signs it when the contact point has an ``hmacConfig``: the signature header
(``X-Grafana-Alerting-Signature`` unless configured otherwise) holds the lowercase hex HMAC-SHA256 of
the body, preceded by ``<timestamp>:`` when a timestamp header is configured (Unix seconds, in that
header). Basic auth is the other way Grafana can authenticate a webhook.

A request is taken only when it is authentic and fresh: with a secret configured, its signature
must match and its timestamp be within ``MAX_AGE_S`` of now (so the timestamp header is required),
and a signature already taken is refused as a replay; with a user and password, Basic auth must
match. Anything else is refused with the reason, and counted. A taken notification names the
incidents its alerts carry (their ``incident_id`` label) and wakes the processor for an immediate
pass; the actions themselves are still decided from the incidents table, so a notification cannot
make the processor act on anything the sidecar has not stored, and a duplicate cannot act twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from shoppulse.http_json import RefusedError

WEBHOOK_PATH = "/grafana/webhook"
DEFAULT_SIGNATURE_HEADER = "X-Grafana-Alerting-Signature"  # http/hmac.go's default (its comment says otherwise)
MAX_AGE_S = 300
REMEMBERED_SIGNATURES = 10_000


class WebhookError(RefusedError):
    """A notification that is not taken; ``status`` is the HTTP answer, the message says why."""


@dataclass
class WebhookAuth:
    secret: str | None = None
    signature_header: str = DEFAULT_SIGNATURE_HEADER
    timestamp_header: str = "X-Grafana-Alert-Timestamp"
    user: str | None = None
    password: str | None = None
    taken: OrderedDict[str, float] = field(default_factory=OrderedDict)  # signatures taken, for replays
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def configured(self) -> bool:
        return bool(self.secret) or bool(self.user and self.password)

    def check(self, headers: dict[str, str], body: bytes, now: float | None = None) -> None:
        """Refuse (WebhookError) a notification that is not authentic or not fresh."""
        now = time.time() if now is None else now
        lowered = {k.lower(): v for k, v in headers.items()}
        if not self.configured:
            raise WebhookError(503, "no webhook secret or basic auth is configured: every notification is refused")
        if self.user and self.password:
            expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            if not hmac.compare_digest(lowered.get("authorization", ""), expected):
                raise WebhookError(401, "basic auth does not match")
        if not self.secret:
            return
        signature = lowered.get(self.signature_header.lower(), "")
        stamp = lowered.get(self.timestamp_header.lower(), "")
        if not stamp.isdigit():
            raise WebhookError(401, f"no {self.timestamp_header} (Unix seconds): set the contact point's "
                                      f"hmacConfig.timestampHeader to {self.timestamp_header}")
        if abs(now - int(stamp)) > MAX_AGE_S:
            raise WebhookError(401, f"the timestamp is {abs(now - int(stamp)):.0f} s from now (at most {MAX_AGE_S})")
        expected = hmac.new(self.secret.encode(), stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            raise WebhookError(401, f"the {self.signature_header} signature does not match")
        with self.lock:
            for old, at in list(self.taken.items()):
                if now - at <= MAX_AGE_S:
                    break
                del self.taken[old]
            if signature in self.taken:
                raise WebhookError(409, "a replay: this signed notification was already taken")
            self.taken[signature] = now
            while len(self.taken) > REMEMBERED_SIGNATURES:
                self.taken.popitem(last=False)


def incident_ids(body: bytes) -> list[str]:
    """The incidents a Grafana notification's alerts carry (``incident_id`` labels); refuses what is
    not Grafana's webhook payload."""
    try:
        payload: Any = json.loads(body)
    except ValueError as exc:
        raise WebhookError(400, f"the body is not JSON: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("version") != "1" or not isinstance(payload.get("alerts"), list):
        raise WebhookError(400, "not a Grafana webhook notification (version \"1\" with a list of alerts)")
    found = []
    for alert in payload["alerts"]:
        labels = alert.get("labels") if isinstance(alert, dict) else None
        if isinstance(labels, dict) and isinstance(labels.get("incident_id"), str) and labels["incident_id"]:
            found.append(labels["incident_id"])
    return list(dict.fromkeys(found))
