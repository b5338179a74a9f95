"""Grafana's webhook contact point as a trigger of the actions processor, sent by Grafana's own code:
the Go program tests/grafana_webhook runs grafana/alerting's webhook notifier (its settings, payload,
HMAC signing and HTTP sender). Signed notifications are taken and name their incidents; forged,
stale, unsigned-timestamp and replayed ones are refused, each with its reason."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from checkout import ROOT
from shoppulse.actions.endpoint import Endpoint, serve
from shoppulse.actions.webhook import WEBHOOK_PATH, WebhookAuth
from shoppulse.ascode.alerting.render import render
from shoppulse.devstack.process import free_port

SENDER = ROOT / ".venv" / "bin" / "grafana-webhook"
SECRET = "a-long-random-webhook-secret"
STAMP = "X-Grafana-Alert-Timestamp"


def grafana_sends(url: str, settings: dict[str, Any], incident: str = "7d0b3c52-1f0e-5d7a-9a43-2f1e0c9b8a61") -> dict:
    """One notification of a firing incident alert, sent by Grafana's webhook notifier to ``url``."""
    assert SENDER.is_file(), f"{SENDER} is missing: ./dev builds it from tests/grafana_webhook (needs Go)"
    now = datetime.now(UTC).replace(microsecond=0)
    request = {"settings": {"url": url, **settings}, "externalURL": "http://grafana.example:3000/",
               "groupKey": '{}:{incident_id="' + incident + '"}', "groupLabels": {"incident_id": incident},
               "now": now.isoformat(), "alerts": [{
                   "labels": {"alertname": "Incident open", "incident_id": incident, "country": "BR"},
                   "annotations": {"summary": "Payment failures in BR"},
                   "startsAt": now.isoformat(), "endsAt": "0001-01-01T00:00:00Z"}]}
    done = subprocess.run([str(SENDER)], input=json.dumps(request), capture_output=True, text=True, timeout=60,
                          check=True)
    return json.loads(done.stdout)


@contextlib.contextmanager
def receiver(auth: WebhookAuth, port: int | None = None) -> Iterator[tuple[str, list[list[str]]]]:
    triggered: list[list[str]] = []
    port = port or free_port()
    # Notifications need no ClickHouse: they only wake the processor (answers are another path).
    server = serve(Endpoint(None, [], auth, triggered.append), "127.0.0.1", port)  # type: ignore[arg-type]
    try:
        yield f"http://127.0.0.1:{port}{WEBHOOK_PATH}", triggered
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def capture() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A plain server that keeps what it receives: the exact request Grafana sent, to replay it."""
    seen: list[tuple[dict[str, str], bytes]] = []

    class Keep(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            pass

        def do_POST(self) -> None:
            seen.append((dict(self.headers.items()), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Keep)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", seen
    finally:
        server.shutdown()
        server.server_close()


SIGNED = {"hmacConfig": {"secret": SECRET, "timestampHeader": STAMP}}


def test_a_signed_notification_from_grafana_is_taken_and_names_its_incident() -> None:
    with receiver(WebhookAuth(SECRET)) as (url, triggered):
        sent = grafana_sends(url, SIGNED)
    assert sent == {"error": ""}, sent
    assert triggered == [["7d0b3c52-1f0e-5d7a-9a43-2f1e0c9b8a61"]]


def test_the_provisioned_contact_point_reaches_the_processor(tmp_path: Path) -> None:
    """alerting/actions-webhook.yaml as `shoppulse alerts render` writes it and Grafana's provisioning
    expands it, sent by Grafana's own webhook notifier: the processor takes it."""
    port = free_port()
    env = {"SHOPPULSE_ACTIONS_WEBHOOK_SECRET": SECRET,
           "SHOPPULSE_ACTIONS_WEBHOOK_URL": f"http://127.0.0.1:{port}{WEBHOOK_PATH}"}
    render(tmp_path, env=env)
    document = yaml.safe_load((tmp_path / "actions-webhook.yaml").read_text())
    provisioned = document["contactPoints"][0]["receivers"][0]["settings"]
    expanded = yaml.safe_load(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], yaml.safe_dump(provisioned)))
    with receiver(WebhookAuth(SECRET), port) as (_url, triggered):
        sent = grafana_sends(expanded.pop("url"), expanded)
    assert sent == {"error": ""}, sent
    assert triggered == [["7d0b3c52-1f0e-5d7a-9a43-2f1e0c9b8a61"]]


def test_a_replayed_forged_or_stale_notification_is_refused() -> None:
    with capture() as (url, seen):
        grafana_sends(url, SIGNED)
    [(headers, body)] = seen
    assert headers["Content-Type"] == "application/json" and headers["User-Agent"] == "Grafana"
    assert json.loads(body)["version"] == "1"
    with receiver(WebhookAuth(SECRET)) as (url, triggered):
        first = requests.post(url, data=body, headers=headers, timeout=5)
        again = requests.post(url, data=body, headers=headers, timeout=5)
        assert (first.status_code, again.status_code) == (200, 409), (first.text, again.text)
        assert "a replay" in again.json()["error"]
        forged = requests.post(url, data=body.replace(b"BR", b"DE"), headers=headers, timeout=5)  # same signature
        assert forged.status_code == 401 and "does not match" in forged.json()["error"]
        old = str(int(time.time()) - 3600)
        stale_signature = hmac.new(SECRET.encode(), old.encode() + b":" + body, hashlib.sha256).hexdigest()
        stale = requests.post(url, data=body, timeout=5,
                              headers={**headers, STAMP: old, "X-Grafana-Alerting-Signature": stale_signature})
        assert stale.status_code == 401 and "from now" in stale.json()["error"]
        assert len(triggered) == 1


def test_grafana_without_a_timestamp_or_the_secret_is_refused_with_what_to_set() -> None:
    with receiver(WebhookAuth(SECRET)) as (url, triggered):
        no_stamp = grafana_sends(url, {"hmacConfig": {"secret": SECRET}})
        wrong = grafana_sends(url, {"hmacConfig": {"secret": "another-secret", "timestampHeader": STAMP}})
        unsigned = grafana_sends(url, {})
    for sent in (no_stamp, wrong, unsigned):
        assert "401" in sent["error"], sent
    assert triggered == []
    with receiver(WebhookAuth(SECRET)) as (url, _):
        answer = requests.post(url, data=b"{}", headers={"X-Grafana-Alerting-Signature": "x"}, timeout=5)
    assert answer.status_code == 401 and f"set the contact point's hmacConfig.timestampHeader to {STAMP}" in (
        answer.json()["error"])


def test_basic_auth_from_grafana_is_checked() -> None:
    auth = WebhookAuth(user="grafana", password="webhook-password")
    with receiver(auth) as (url, triggered):
        taken = grafana_sends(url, {"username": "grafana", "password": "webhook-password"})
        refused = grafana_sends(url, {"username": "grafana", "password": "guess"})
    assert taken["error"] == "" and "401" in refused["error"] and len(triggered) == 1


@pytest.mark.parametrize(("body", "status", "says"), [
    (b"not json", 400, "not JSON"),
    (b'{"alerts": []}', 400, "not a Grafana webhook notification"),
    (b'{"version": "1", "alerts": {}}', 400, "not a Grafana webhook notification"),
])
def test_what_is_not_grafana_s_payload_is_refused(body: bytes, status: int, says: str) -> None:
    stamp = str(int(time.time()))
    signature = hmac.new(SECRET.encode(), stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    with receiver(WebhookAuth(SECRET)) as (url, triggered):
        answer = requests.post(url, data=body, timeout=5,
                               headers={STAMP: stamp, "X-Grafana-Alerting-Signature": signature})
    assert answer.status_code == status and says in answer.json()["error"] and triggered == []


def test_no_configured_secret_refuses_everything() -> None:
    with receiver(WebhookAuth()) as (url, triggered):
        sent = grafana_sends(url, SIGNED)
    assert "503" in sent["error"] and triggered == []
