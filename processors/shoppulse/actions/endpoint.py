"""The actions processor's HTTP endpoint (``SHOPPULSE_ACTIONS_WEBHOOK_PORT``): what reaches it from outside.

- ``POST /grafana/webhook``: Grafana's webhook contact point, a trigger (``webhook.py``);
- ``POST /slack/interactions``: the Slack app's Request URL, where approval buttons are clicked
  (``slack.py``); acknowledged at once, as Slack asks, the answer then recorded and told in Slack;
- ``GET /actions/answer``: a signed approval link (``links.py``) shows what it would answer and a
  button; ``POST /actions/answer`` answers.

Every refusal is answered with its reason and counted; nothing here acts on the shop: answers are
recorded, and the processor's loop does what is recorded.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from clickhouse_connect.driver.client import Client
from prometheus_client import Counter

from shoppulse.actions.approvals import Answer, announce, answer, as_listed
from shoppulse.actions.links import ANSWER_PATH, LinkError, verify_link
from shoppulse.actions.policy import Policy
from shoppulse.actions.slack import Click, InteractionError, SlackApprovals, SlackError
from shoppulse.actions.webhook import WEBHOOK_PATH, WebhookAuth, WebhookError, incident_ids
from shoppulse.http_json import answer_json

log = logging.getLogger(__name__)

SLACK_PATH = "/slack/interactions"
MAX_BODY = 1 << 20
REQUESTS = Counter("shoppulse_actions_http_requests", "Requests to the actions processor's endpoint",
                   ["path", "outcome"])


@dataclass
class Endpoint:
    """What the endpoint answers with: the audit (for answers), the policies, Slack, the secrets."""

    client: Client
    policies: Sequence[Policy]
    webhook: WebhookAuth
    on_trigger: Callable[[list[str]], None]
    slack: SlackApprovals | None = None
    link_secret: str | None = None

    def slack_click(self, click: Click) -> None:
        """Record a click's answer, then say in Slack what became of it."""
        assert self.slack is not None
        slack = self.slack

        def answers_as(approvers: list[str]) -> str | None:
            try:
                return slack.qualifies(click.user_id, approvers)
            except SlackError as exc:
                log.warning("slack approver check failed", extra={"error": str(exc)})
                return None

        now = datetime.now(UTC)
        result = answer(self.client, self.policies, click.action_id, click.approve, now,
                        f"slack:{click.user_id}", answers_as, "slack")
        if result.recorded:
            announce(slack, result, click.approve, f"<@{click.user_id}>", now)
        else:
            slack.tell(click, result.said)

    def link_answer(self, fields: dict[str, str]) -> Answer:
        signed = verify_link(self.link_secret, fields)
        now = datetime.now(UTC)
        result = answer(self.client, self.policies, signed.action_id, signed.approve, now,
                        f"link:{signed.approver}", as_listed(signed.approver), "link")
        announce(self.slack, result, signed.approve, f"{signed.approver} (link)", now)
        return result


def _page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1>{body}</body></html>").encode()


def _handler(endpoint: Endpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:  # requests are logged and counted below
            pass

        def _refuse(self, path: str, status: int, reason: str) -> None:
            REQUESTS.labels(path, f"refused_{status}").inc()
            log.warning("request refused", extra={"path": path, "status": status, "reason": reason})
            answer_json(self, status, {"error": reason})

        def _html(self, status: int, page: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Referrer-Policy", "no-referrer")  # the link's signature stays on this page
            # No scripts, no framing (an approve button under someone else's page), forms to here only.
            self.send_header("Content-Security-Policy",
                             "default-src 'none'; form-action 'self'; frame-ancestors 'none'")
            self.end_headers()
            self.wfile.write(page)

        def _refuse_link(self, refused: LinkError) -> None:
            REQUESTS.labels(ANSWER_PATH, f"refused_{refused.status}").inc()
            self._html(refused.status, _page("This link does not answer anything", html.escape(str(refused))))

        def _body(self) -> bytes | None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return None
            return self.rfile.read(length)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path != ANSWER_PATH:
                self._refuse(parts.path, 404, f"no such page: approval links open {ANSWER_PATH}")
                return
            fields = dict(parse_qsl(parts.query))
            try:
                signed = verify_link(endpoint.link_secret, fields)
            except LinkError as refused:
                self._refuse_link(refused)
                return
            verb = "Approve" if signed.approve else "Reject"
            hidden = "".join(f"<input type='hidden' name='{html.escape(k)}' value='{html.escape(v)}'>"
                             for k, v in fields.items())
            REQUESTS.labels(ANSWER_PATH, "shown").inc()
            self._html(200, _page(f"{verb} action {signed.action_id}?",
                                  f"<p>As {html.escape(signed.approver)}. Nothing happens until you press the "
                                  f"button.</p><form method='post' action='{ANSWER_PATH}'>{hidden}"
                                  f"<button type='submit'>{verb}</button></form>"))

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            body = self._body()
            if body is None:
                self._refuse(path, 413, f"a request body over {MAX_BODY} bytes")
                return
            if path == WEBHOOK_PATH:
                self._grafana(body)
            elif path == SLACK_PATH:
                self._slack(body)
            elif path == ANSWER_PATH:
                self._link(body)
            else:
                self._refuse(path, 404, f"no such endpoint: Grafana posts to {WEBHOOK_PATH}, Slack to "
                                        f"{SLACK_PATH}, approval links to {ANSWER_PATH}")

        def _grafana(self, body: bytes) -> None:
            try:
                endpoint.webhook.check(dict(self.headers.items()), body)
                incidents = incident_ids(body)
            except WebhookError as refused:
                self._refuse(WEBHOOK_PATH, refused.status, str(refused))
                return
            REQUESTS.labels(WEBHOOK_PATH, "taken").inc()
            log.info("webhook taken", extra={"incidents": incidents})
            endpoint.on_trigger(incidents)
            answer_json(self, 200, {"taken": len(incidents)})

        def _slack(self, body: bytes) -> None:
            if endpoint.slack is None:
                self._refuse(SLACK_PATH, 503, "Slack approvals are not configured (SLACK_BOT_TOKEN, "
                                              "SLACK_SIGNING_SECRET)")
                return
            try:
                click = endpoint.slack.click(dict(self.headers.items()), body)
            except InteractionError as refused:
                self._refuse(SLACK_PATH, refused.status, str(refused))
                return
            REQUESTS.labels(SLACK_PATH, "taken").inc()
            self.send_response(200)  # Slack wants the acknowledgement within 3 s; the answer follows in Slack
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.wfile.flush()
            try:
                endpoint.slack_click(click)
            except Exception as exc:  # acknowledged already: the click is lost to a failure, logged and counted
                REQUESTS.labels(SLACK_PATH, "failed").inc()
                log.warning("slack click not recorded", extra={"action_id": str(click.action_id),
                                                               "error": str(exc).splitlines()[0][:300]})

        def _link(self, body: bytes) -> None:
            try:
                result = endpoint.link_answer(dict(parse_qsl(body.decode("utf-8", "replace"))))
            except LinkError as refused:
                self._refuse_link(refused)
                return
            REQUESTS.labels(ANSWER_PATH, "recorded" if result.recorded else "refused_409").inc()
            self._html(200 if result.recorded else 409,
                       _page("Recorded" if result.recorded else "Not recorded", f"<p>{html.escape(result.said)}</p>"))

    return Handler


def serve(endpoint: Endpoint, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the endpoint at ``http://host:port`` from a background thread."""
    server = ThreadingHTTPServer((host, port), _handler(endpoint))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="actions-endpoint").start()
    return server
