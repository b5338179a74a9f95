"""The shipped Slack and PagerDuty templates rendered by Grafana's own notification code: the Go
program tests/notification_render (built by ./dev) runs grafana/alerting's template factory and
``TmplText`` — the default templates and functions Grafana adds, and the data Grafana extends
Alertmanager's with (dashboard and silence URLs from the rule's dashboard, panel and org) — over the
alerts of a notification group, as the Slack and PagerDuty notifiers do.

The alerts carry the labels and annotations the shipped rules give them; the ruler's expansion of
the annotations' own templates (``$labels``, ``humanize``) is Grafana's and is written out here as
text, since these tests are about the notification templates."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from checkout import ROOT
from shoppulse.ascode.alerting.files import alerting_paths, load

RENDERER = ROOT / ".venv" / "bin" / "notification-render"
EXTERNAL_URL = "https://grafana.example.com/"
RUNBOOKS = "https://runbooks.example.com/shoppulse"
NOW = datetime(2026, 12, 3, 12, 10, tzinfo=UTC)
SINCE = NOW - timedelta(minutes=8)
INCIDENT = "4b1e6a52-0e1c-5f57-9d3f-0b8c2f6f1a11"


def templates() -> dict[str, str]:
    provisioned = yaml.safe_load((ROOT / "alerting" / "templates.yaml").read_text())
    return {t["name"]: t["template"] for t in provisioned["templates"]}


def receiver_settings(path: str, receiver: str) -> dict[str, Any]:
    provisioned = yaml.safe_load((ROOT / "alerting" / path).read_text())
    return next(r["settings"] for point in provisioned["contactPoints"] for r in point["receivers"]
                if r["uid"] == receiver)


def rule(uid: str) -> dict[str, Any]:
    return next(located.item for located in load(alerting_paths()).rules() if located.item["uid"] == uid)


def expanded(text: str, labels: dict[str, str], value: str) -> str:
    """The ruler's expansion of a rule annotation, written out: labels, the value as Grafana humanizes it."""
    text = text.replace("${SHOPPULSE_RUNBOOK_BASE_URL}", RUNBOOKS)
    text = re.sub(r'\{\{\s*reReplaceAll\s+"([^"]*)"\s+"([^"]*)"\s+\$labels\.(\w+)\s*\}\}',
                  lambda m: re.sub(m.group(1), m.group(2), labels.get(m.group(3), "")), text)
    text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), text)
    return re.sub(r"\{\{\s*humanize(?:Percentage)?\s+\$values\.\w+\.Value\s*\}\}", value, text)


def alert(uid: str, query_labels: dict[str, str], value: str, starts: datetime,
          ends: datetime | None = None) -> dict[str, Any]:
    """An alert of the shipped rule ``uid`` as Grafana's ruler sends it to its Alertmanager."""
    shipped = rule(uid)
    labels = {"alertname": shipped["title"], "grafana_folder": "shoppulse", "__alert_rule_uid__": uid,
              **{k: str(v) for k, v in shipped["labels"].items()}, **query_labels}
    annotations = {name: expanded(str(text), labels, value) for name, text in shipped["annotations"].items()}
    annotations |= {"__dashboardUid__": shipped["dashboardUid"], "__panelId__": str(shipped["panelId"]),
                    "__orgId__": "1"}
    return {"labels": labels, "annotations": annotations, "startsAt": starts.isoformat(),
            "endsAt": (ends or datetime(1, 1, 1, tzinfo=UTC)).isoformat(),
            "generatorURL": f"{EXTERNAL_URL}alerting/grafana/{uid}/view"}


def render(alerts: list[dict[str, Any]], group_labels: dict[str, str], fields: dict[str, str],
           receiver: str = "slack-oncall", shipped: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert RENDERER.is_file(), f"{RENDERER} is missing: ./dev builds it from tests/notification_render (needs Go)"
    request = {"templates": shipped or templates(), "externalURL": EXTERNAL_URL, "orgId": "1", "receiver": receiver,
               "groupKey": json.dumps(group_labels), "groupLabels": group_labels, "now": NOW.isoformat(),
               "alerts": alerts, "render": fields}
    return subprocess.run([str(RENDERER)], input=json.dumps(request), capture_output=True, text=True, timeout=60,
                          check=False)


def rendered(*args: Any, **kwargs: Any) -> dict[str, str]:
    done = render(*args, **kwargs)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def incident_alerts(resolved_payments: bool = False) -> list[dict[str, Any]]:
    incident = alert("shoppulse-incident-open", {
        "incident_id": INCIDENT, "kind": "payment_failures", "countries": "DE", "incident_severity": "critical",
        "since": f"{SINCE:%Y-%m-%dT%H:%M:%SZ}",
        "top_contributor": "gateway adyen"},
        "$38,993", SINCE + timedelta(minutes=3))
    payments = alert("shoppulse-payment-failure-rate", {"country": "DE", "incident_id": INCIDENT}, "88 %",
                     SINCE + timedelta(minutes=1), NOW - timedelta(minutes=1) if resolved_payments else None)
    return [incident, payments]


def test_an_incident_s_slack_message_tells_its_story_once_with_its_alerts_under_it() -> None:
    slack = receiver_settings("contact-points.yaml", "shoppulse-slack-oncall")
    message = rendered(incident_alerts(), {"incident_id": INCIDENT}, {"title": slack["title"], "text": slack["text"]})
    assert message["title"] == "[FIRING:2] Incident · payment_failures · DE"
    story, payments = message["text"].split("*Payments are failing in DE*")
    assert story.startswith(f"*payment_failures in DE since {SINCE:%Y-%m-%dT%H:%M:%SZ}* · critical\n")
    assert "top contributor: gateway adyen\n" in story
    assert "$38,993 of revenue at risk so far (critical)" in story
    # Grafana's dashboard URL for the rule's dashboard (from an hour before the alert began), with the
    # incident's countries
    link = re.search(r"<(https://grafana\.example\.com/d/shoppulse-store-live\?[^|>]+)\|Dashboard>", story)
    assert link and "var-country=DE" in link.group(1) and "orgId=1" in link.group(1)
    assert f"from={int((SINCE + timedelta(minutes=3) - timedelta(hours=1)).timestamp() * 1000)}&" in link.group(1)
    assert f"<{RUNBOOKS}/incident-open.md|Runbook>" in story
    assert "https://grafana.example.com/alerting/silence/new?alertmanager=grafana" in story
    assert payments.startswith(" · country DE · critical\nObserved 88 % failed · expected at most 30 %")
    assert f"<{RUNBOOKS}/payment-failure-rate.md|Runbook>" in payments


def test_a_resolved_alert_is_listed_under_resolved() -> None:
    slack = receiver_settings("contact-points.yaml", "shoppulse-slack-oncall")
    message = rendered(incident_alerts(resolved_payments=True), {"incident_id": INCIDENT},
                       {"title": slack["title"], "text": slack["text"]})
    assert message["title"] == "[FIRING:1] Incident · payment_failures · DE"
    firing, resolved = message["text"].split("*Resolved*\n")
    assert "payment_failures in DE since" in firing and "Payments are failing" not in firing
    assert resolved.startswith("*Payments are failing in DE* · country DE · critical")


def test_the_pagerduty_summary_names_the_alert_and_its_country() -> None:
    pagerduty = receiver_settings("pagerduty.yaml", "shoppulse-pagerduty-oncall")
    [_, payments] = incident_alerts()
    summary = rendered([payments], {"alertname": payments["labels"]["alertname"], "country": "DE"},
                       {"summary": pagerduty["summary"]}, receiver="pagerduty-oncall")["summary"]
    assert summary == "Payment failure rate high in DE: Payments are failing in DE"


def test_a_template_grafana_cannot_execute_is_refused_by_its_engine() -> None:
    """The renderer is Grafana's engine, refusals included: a field its notification data lacks fails
    the message (Grafana would send its error text instead), as does an unknown function at parse."""
    broken = {"shoppulse": templates()["shoppulse"].replace(".Annotations.runbook_url", ".RunbookURL", 1)}
    failed = render(incident_alerts(), {"incident_id": INCIDENT}, {"text": '{{ template "shoppulse.slack.text" . }}'},
                    shipped=broken)
    assert failed.returncode == 1 and "can't evaluate field RunbookURL" in failed.stderr
    unknown = render(incident_alerts(), {}, {"text": "{{ .Status | shout }}"})
    assert unknown.returncode == 1 and 'function "shout" not defined' in unknown.stderr


@pytest.mark.parametrize("field", ["Receiver", "GroupKey", "ExternalURL"])
def test_grafana_s_own_fields_reach_the_templates(field: str) -> None:
    value = rendered(incident_alerts(), {"incident_id": INCIDENT}, {"value": f"{{{{ .{field} }}}}"})["value"]
    assert value == {"Receiver": "slack-oncall", "GroupKey": json.dumps({"incident_id": INCIDENT}),
                     "ExternalURL": EXTERNAL_URL}[field]
