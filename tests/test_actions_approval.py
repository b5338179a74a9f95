"""Approvals end to end: ``shoppulse actions run`` as a process, over real ClickHouse, with stand-ins of
Slack and of the shop's admin API that enforce their contracts.

A payment-outage incident proposes the failover and asks in Slack (valid Block Kit, once); a click
by someone who is not an approver is refused and told so; an approver's click, delivered twice,
approves once and the failover runs once — also when the processor is SIGKILLed between the shop's
change and its record; forged or stale clicks are refused; signed links answer (after a button
press, never on opening) and altered or expired ones do not; an expired request loses its buttons.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import yaml
from clickhouse_connect.driver.client import Client

from checkout import ROOT
from conftest import EndpointProcess, store_region
from shoppulse.actions.links import answer_link
from shoppulse.actions.slack import APPROVE, REJECT
from shoppulse.devstack.process import ManagedProcess, free_port, tail, wait_until
from shoppulse.devstack.shop_admin_standin import ShopState, shop_admin_standin
from shoppulse.devstack.slack_standin import SlackState, slack_standin

pytestmark = pytest.mark.integration
SHOP_TOKEN, BOT_TOKEN, SIGNING_SECRET, LINK_SECRET = "shop-token", "xoxb-test-bot", "slack-signing", "link-secret"
CHANNEL, ONCALL, STRANGER = "C0APPROVALS", "U0ONCALL", "U0STRANGER"
COLUMNS = ["incident_id", "kind", "countries", "metrics", "anomaly_ids", "opened_at", "resolved_at", "severity",
           "revenue_at_risk", "contributors", "contributor_dimensions", "contributor_values", "contributor_shares",
           "story", "as_of", "detected_at", "updated_at"]


@dataclass
class Stack:
    db: Client
    slack: SlackState
    shop: ShopState
    process: ManagedProcess
    endpoint_url: str
    env: dict[str, str]

    def steps(self) -> list[tuple[str, str]]:
        return [(str(s), str(a)) for s, a in self.db.query(
            "SELECT step, actor FROM action_audit ORDER BY at, indexOf(['proposed', 'refused', 'approval_requested', "
            "'approved', 'rejected', 'expired', 'executed', 'failed', 'rolled_back'], step)").result_rows]

    def wait_for(self, step: str, timeout_s: float = 30) -> None:
        wait_until(lambda: step in [s for s, _ in self.steps()], timeout_s, f"the action's step {step}",
                   alive=self.process.is_running, on_fail=lambda: tail(self.process.log_path))

    def request(self) -> tuple[str, str]:
        self.wait_for("approval_requested")
        [(channel, ts)] = list(self.slack.messages)
        return channel, ts


def store_outage(client: Client, opened: datetime, country: str = "BR") -> uuid.UUID:
    incident = uuid.uuid4()
    client.insert("incidents", [[incident, "payment_failures", [country], ["payment_failure_rate"], [], opened, None,
                                 "critical", 800.0, ["gateway pix: 96 % of the extra failures"], ["gateway"], ["pix"],
                                 [0.96], "Payment failures in BR since 16:02: pix fails 41 % of payments.", opened,
                                 opened, opened]], column_names=COLUMNS)
    store_region(client, incident, country, opened)
    return incident


@pytest.fixture
def stack(clickhouse_endpoint: EndpointProcess, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    settings, db = clickhouse_endpoint.migrated("approval")
    policy = yaml.safe_load((ROOT / "actions" / "payment-failover.yaml").read_text())
    policy.update(mode="live")
    policy["approval"].update(expires_after=getattr(request, "param", "15m"))
    (tmp_path / "actions").mkdir()
    (tmp_path / "actions" / "payment-failover.yaml").write_text(yaml.safe_dump(policy))
    port = free_port()
    with shop_admin_standin(SHOP_TOKEN) as (shop_url, shop), \
            slack_standin(BOT_TOKEN, SIGNING_SECRET, {CHANNEL: True}, {"S0PAYMENTS": [ONCALL, "U0OTHER"]}) as (
                slack_url, slack):
        slack.request_url = f"http://127.0.0.1:{port}/slack/interactions"
        env = {"SHOPPULSE_HOME": str(tmp_path), "CLICKHOUSE_URL": settings.clickhouse_http_url,
               "CLICKHOUSE_PASSWORD": settings.clickhouse_password,
               "SHOPPULSE_CLICKHOUSE_DATABASE": settings.clickhouse_database,
               "SHOPPULSE_SHOP_ADMIN_URL": shop_url, "SHOPPULSE_SHOP_ADMIN_TOKEN": SHOP_TOKEN,
               "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_CHANNEL": CHANNEL,
               "SHOPPULSE_SLACK_API_URL": slack_url, "SHOPPULSE_ACTIONS_LINK_SECRET": LINK_SECRET,
               "SHOPPULSE_ACTIONS_PUBLIC_URL": f"http://127.0.0.1:{port}", "SHOPPULSE_ACTIONS_INTERVAL_S": "0.5",
               "SHOPPULSE_ACTIONS_WEBHOOK_PORT": str(port), "SHOPPULSE_ACTIONS_METRICS_PORT": str(free_port())}
        process = ManagedProcess("actions", [sys.executable, "-m", "shoppulse", "actions", "run"],
                                 tmp_path / "actions.log", env=env)
        stack = Stack(db, slack, shop, process, f"http://127.0.0.1:{port}", env)
        process.start()
        try:
            wait_until(lambda: _listening(stack.endpoint_url), 60, "the actions endpoint", alive=process.is_running,
                       on_fail=lambda: tail(process.log_path))
            yield stack
        finally:
            process.stop()
            db.close()


def _listening(url: str) -> bool:
    try:
        requests.get(url, timeout=1)
        return True
    except requests.RequestException:
        return False


def _restart(stack: Stack) -> None:
    stack.process.start()
    wait_until(lambda: _listening(stack.endpoint_url), 60, "the actions endpoint again",
               alive=stack.process.is_running, on_fail=lambda: tail(stack.process.log_path))


def test_an_approver_s_click_delivered_twice_runs_the_failover_once_across_a_crash(stack: Stack) -> None:
    store_outage(stack.db, datetime.now(UTC) - timedelta(minutes=3))
    channel, ts = stack.request()
    time.sleep(1.5)  # further passes: asked once
    message = stack.slack.messages[(channel, ts)]
    assert len(stack.slack.messages) == 1 and stack.slack.warnings == []
    assert "pix fails 41 %" in str(message.blocks) and "/admin/payments/failover" in str(message.blocks)

    assert stack.slack.click(channel, ts, APPROVE, STRANGER).status_code == 200  # acknowledged, then refused
    wait_until(lambda: bool(stack.slack.ephemeral), 10, "the reply to the stranger")
    assert "may not approve" in stack.slack.ephemeral[0]["text"] and stack.shop.requests == 0

    stack.shop.hold_s = 30  # the shop applies the failover and keeps its answer back: the processor dies waiting
    assert stack.slack.click(channel, ts, APPROVE, ONCALL, deliveries=2).status_code == 200
    wait_until(lambda: len(stack.shop.effects) == 1, 30, "the failover at the shop",
               on_fail=lambda: tail(stack.process.log_path))
    stack.process.kill()
    assert "executed" not in [s for s, _ in stack.steps()]
    stack.shop.hold_s = 0
    _restart(stack)
    stack.wait_for("executed")
    assert stack.shop.effects == [("/admin/payments/failover", {
        "country": "BR", "from_gateway": "pix", "reason": stack.shop.effects[0][1]["reason"]})]
    assert stack.shop.routes == {"BR": "pix"}
    steps = stack.steps()
    assert [s for s, _ in steps] == ["proposed", "approval_requested", "approved", "executed"]
    assert ("approved", f"slack:{ONCALL}") in steps  # once, though the click came twice
    wait_until(lambda: "approved by" in message.text, 10, "the request closed in Slack")
    assert APPROVE not in str(message.blocks)  # no buttons left to press
    assert any("not awaiting approval" in e["text"] for e in stack.slack.ephemeral)  # the second delivery, told


def test_forged_stale_and_unsigned_clicks_are_refused(stack: Stack) -> None:
    store_outage(stack.db, datetime.now(UTC) - timedelta(minutes=3))
    channel, ts = stack.request()
    forged = stack.slack.click(channel, ts, APPROVE, ONCALL, signing_secret="guessed")
    stale = stack.slack.click(channel, ts, APPROVE, ONCALL, sent_at=time.time() - 600)
    unsigned = requests.post(f"{stack.endpoint_url}/slack/interactions", data={"payload": "{}"}, timeout=10)
    assert (forged.status_code, stale.status_code, unsigned.status_code) == (401, 401, 401)
    assert "does not match" in forged.json()["error"] and "replay" in stale.json()["error"]
    assert stack.slack.click(channel, ts, REJECT, "U0OTHER").status_code == 200  # a member of S0PAYMENTS
    stack.wait_for("rejected")
    time.sleep(1.5)
    assert stack.shop.requests == 0 and [s for s, _ in stack.steps()] == ["proposed", "approval_requested",
                                                                         "rejected"]


def test_a_signed_link_answers_only_when_pressed_and_only_unaltered(stack: Stack) -> None:
    store_outage(stack.db, datetime.now(UTC) - timedelta(minutes=3))
    stack.request()
    [action_id] = [uuid.UUID(str(a)) for (a,) in stack.db.query("SELECT DISTINCT action_id FROM action_audit")
                   .result_rows]
    link = subprocess.run([sys.executable, "-m", "shoppulse", "actions", "link", str(action_id), "--as", "S0PAYMENTS"],
                          capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **stack.env})
    assert link.returncode == 0, link.stderr
    approve = next(line.split(": ", 1)[1] for line in link.stdout.splitlines() if line.startswith("approve: "))
    opened = requests.get(approve, timeout=10)  # as a link preview would: no answer
    assert opened.status_code == 200 and "frame-ancestors 'none'" in opened.headers["Content-Security-Policy"]
    assert "approved" not in [s for s, _ in stack.steps()]
    fields = dict(parse_qsl(urlsplit(approve).query))
    altered = requests.post(f"{stack.endpoint_url}/actions/answer", data={**fields, "as": "U0STRANGER"}, timeout=10)
    expired = answer_link(LINK_SECRET, stack.endpoint_url, action_id, True, "S0PAYMENTS",
                          datetime.now(UTC) - timedelta(seconds=1))
    assert altered.status_code == 403 and requests.get(expired, timeout=10).status_code == 410
    pressed = requests.post(f"{stack.endpoint_url}/actions/answer", data=fields, timeout=10)
    again = requests.post(f"{stack.endpoint_url}/actions/answer", data=fields, timeout=10)
    assert (pressed.status_code, again.status_code) == (200, 409) and "not awaiting approval" in again.text
    stack.wait_for("executed")
    assert ("approved", "link:S0PAYMENTS") in stack.steps() and len(stack.shop.effects) == 1
    wait_until(lambda: "approved by S0PAYMENTS (link)" in next(iter(stack.slack.messages.values())).text, 10,
               "the Slack request closed")


@pytest.mark.parametrize("stack", ["8s"], indirect=True)
def test_an_unanswered_request_expires_and_loses_its_buttons(stack: Stack) -> None:
    store_outage(stack.db, datetime.now(UTC) - timedelta(minutes=3))
    channel, ts = stack.request()
    stack.wait_for("expired")
    message = stack.slack.messages[(channel, ts)]
    wait_until(lambda: "expired" in message.text, 10, "the request closed in Slack")
    assert APPROVE not in str(message.blocks) and stack.shop.requests == 0
    with pytest.raises(LookupError):
        stack.slack.click(channel, ts, APPROVE, ONCALL)
