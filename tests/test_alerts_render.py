"""`shoppulse alerts render` writes the alerting files Grafana can load in this environment: a
receiver without its secret is left out (Grafana would refuse to start), secrets stay ${VAR}."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shoppulse.ascode.alerting.files import alerting_paths, load
from shoppulse.ascode.alerting.notify import policy_tree
from shoppulse.ascode.alerting.render import FALLBACK_RECEIVER, RenderError, render

SECRET = "https://hooks.slack.example/T000/B000/very-secret"


def documents(folder: Path) -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))}


def receivers(policy: dict) -> set[str]:
    return {policy["receiver"]} | {r for child in policy.get("routes", []) for r in receivers(child)}


def test_without_slack_or_pagerduty_alerts_go_to_grafana_s_default_contact_point(tmp_path: Path) -> None:
    rendered = render(tmp_path, env={})
    files = documents(tmp_path)
    assert "pagerduty.yaml" not in files and "contact-points.yaml" not in files
    assert receivers(files["policies.yaml"]["policies"][0]) == {FALLBACK_RECEIVER}
    assert {"rules.yaml", "templates.yaml", "mute-timings.yaml"} <= set(files)
    assert any("PAGERDUTY_ROUTING_KEY" in note for note in rendered.notes)
    assert any("SLACK_WEBHOOK_URL" in note for note in rendered.notes)


def test_a_webhook_and_a_routing_key_provision_both_without_writing_secrets(tmp_path: Path) -> None:
    render(tmp_path, env={"SLACK_WEBHOOK_URL": SECRET, "PAGERDUTY_ROUTING_KEY": "pd-secret-key",
                          "SHOPPULSE_RUNBOOK_BASE_URL": "https://git.example/runbooks"})
    files = documents(tmp_path)
    slack = files["contact-points.yaml"]["contactPoints"][0]["receivers"][0]["settings"]
    assert slack["url"] == "${SLACK_WEBHOOK_URL}" and "token" not in slack and "recipient" not in slack
    assert files["pagerduty.yaml"]["contactPoints"][0]["receivers"][0]["settings"]["integrationKey"] == \
        "${PAGERDUTY_ROUTING_KEY}"
    assert receivers(files["policies.yaml"]["policies"][0]) == {"slack-oncall", "pagerduty-oncall"}
    written = "".join(p.read_text() for p in tmp_path.iterdir())
    assert SECRET not in written and "pd-secret-key" not in written


def test_a_bot_token_needs_its_channel(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="SLACK_CHANNEL"):
        render(tmp_path, env={"SLACK_BOT_TOKEN": "xoxb-1"})
    render(tmp_path, env={"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_CHANNEL": "#shop-oncall"})
    slack = documents(tmp_path)["contact-points.yaml"]["contactPoints"][0]["receivers"][0]["settings"]
    assert slack["token"] == "${SLACK_BOT_TOKEN}" and slack["recipient"] == "${SLACK_CHANNEL}" and "url" not in slack


def test_rendering_again_replaces_what_an_earlier_render_left(tmp_path: Path) -> None:
    render(tmp_path, env={"SLACK_WEBHOOK_URL": SECRET, "PAGERDUTY_ROUTING_KEY": "k"})
    render(tmp_path, env={"SLACK_WEBHOOK_URL": SECRET})
    assert "pagerduty.yaml" not in documents(tmp_path)


ACTIONS_ENV = {"SHOPPULSE_ACTIONS_WEBHOOK_SECRET": "hmac-secret-value",
               "SHOPPULSE_ACTIONS_WEBHOOK_URL": "http://actions:9469/grafana/webhook"}


def test_the_actions_webhook_is_provisioned_with_its_secret_and_takes_only_the_incident_alert(tmp_path: Path) -> None:
    render(tmp_path, env={"SLACK_WEBHOOK_URL": SECRET, **ACTIONS_ENV})
    settings = documents(tmp_path)["actions-webhook.yaml"]["contactPoints"][0]["receivers"][0]["settings"]
    assert settings["hmacConfig"]["secret"] == "${SHOPPULSE_ACTIONS_WEBHOOK_SECRET}"
    assert "hmac-secret-value" not in "".join(p.read_text() for p in tmp_path.iterdir())
    tree = policy_tree(load(alerting_paths(tmp_path)))
    assert tree is not None
    incident = {"alertname": "Incident open", "incident_id": "i-1", "severity": "critical", "country": "BR"}
    grouped_under_it = {**incident, "alertname": "Payment failure rate high"}
    assert [r.receiver for r in tree.match(incident)] == ["shoppulse-actions", "slack-oncall"]
    assert [r.receiver for r in tree.match(grouped_under_it)] == ["slack-oncall"]


def test_the_actions_webhook_is_left_out_without_its_secret_and_needs_its_url(tmp_path: Path) -> None:
    rendered = render(tmp_path, env={"SLACK_WEBHOOK_URL": SECRET})
    assert "actions-webhook.yaml" not in documents(tmp_path)
    assert "shoppulse-actions" not in receivers(documents(tmp_path)["policies.yaml"]["policies"][0])
    assert any("SHOPPULSE_ACTIONS_WEBHOOK_SECRET" in note for note in rendered.notes)
    with pytest.raises(RenderError, match="SHOPPULSE_ACTIONS_WEBHOOK_URL"):
        render(tmp_path, env={"SHOPPULSE_ACTIONS_WEBHOOK_SECRET": "s"})
