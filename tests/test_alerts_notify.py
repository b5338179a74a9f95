"""What Grafana's Alertmanager sends for a set of firings, through the shipped notification policy
tree: routing (deepest match, ``continue``, anchored regex matchers), grouping by the route's
``group_by``, group_wait / group_interval / repeat_interval, resolved messages — and one group per
incident for every alert that carries its incident_id."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from shoppulse.ascode.alerting.files import alerting_paths, load
from shoppulse.ascode.alerting.notify import (
    Alert,
    Route,
    alert_labels,
    dispatch,
    groups_of,
    notification_lines,
    policy_tree,
    without_resolved_messages,
)
from shoppulse.ascode.alerting.replay import Firing
from shoppulse.sidecar.incidents import KINDS, TITLES

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
INCIDENT = "7d4f0c52-5a6e-5d3b-9a57-1f1f2f6b8e01"


@pytest.fixture(scope="module")
def tree() -> Route:
    found = policy_tree(load(alerting_paths()))
    assert found is not None
    return found


def alert(minutes: float, until: float | None = None, **labels: str) -> Alert:
    ends = T0 + timedelta(minutes=until) if until is not None else None
    return Alert(frozenset({"grafana_folder": "shoppulse", **labels}.items()), T0 + timedelta(minutes=minutes), ends)


def payment(country: str, minutes: float, until: float | None = None, **extra: str) -> Alert:
    return alert(minutes, until, alertname="Payment failure rate high", team="payments", severity="critical",
                 country=country, **extra)


def test_rule_labels_win_over_the_query_s_and_grafana_adds_its_own() -> None:
    rule = {"title": "Incident open", "labels": {"severity": "high", "team": "store"}}
    labels = dict(alert_labels(rule, "shoppulse", Firing(frozenset({("severity", "low"), ("kind", "x")}), T0)))
    assert labels == {"alertname": "Incident open", "grafana_folder": "shoppulse", "severity": "high",
                      "team": "store", "kind": "x"}


def test_a_critical_alert_pages_pagerduty_and_slack_once_each_after_group_wait(tree: Route) -> None:
    sent = dispatch(tree, [payment("DE", 0)], T0 + timedelta(minutes=30))
    assert [(n.receiver, n.at - T0) for n in sent] == [("pagerduty-oncall", timedelta(seconds=10)),
                                                       ("slack-oncall", timedelta(seconds=10))]
    # Nothing changes for 30 minutes: the repeat interval (1 h) has not passed.
    assert len(sent) == 2


def test_a_new_alert_joins_its_group_at_the_next_group_interval_and_repeats_after_an_hour(tree: Route) -> None:
    # Two countries of one rule are two groups (group_by alertname, country); the same country twice is one.
    first = payment("DE", 0)
    other = alert(1, alertname="Payment failure rate high", team="payments", severity="critical", country="DE",
                  gateway="adyen")
    sent = [n for n in dispatch(tree, [first, other], T0 + timedelta(minutes=70)) if n.receiver == "slack-oncall"]
    # group_wait 10 s, then the critical/high route's group_interval of 2 m: the second alert is told at 2m10s,
    # and the unchanged group again at the first tick after the repeat interval (1 h) has passed (strictly).
    assert [n.at - T0 for n in sent] == [timedelta(seconds=10), timedelta(minutes=2, seconds=10),
                                         timedelta(minutes=64, seconds=10)]
    assert [len(n.firing) for n in sent] == [1, 2, 2]


def test_a_resolution_is_told_once_and_the_group_ends(tree: Route) -> None:
    sent = [n for n in dispatch(tree, [payment("DE", 0, until=3)], T0 + timedelta(hours=3))
            if n.receiver == "slack-oncall"]
    assert [(n.at - T0, len(n.firing), len(n.resolved)) for n in sent] == [
        (timedelta(seconds=10), 1, 0), (timedelta(minutes=4, seconds=10), 0, 1)]


def test_an_alert_fired_and_resolved_between_two_flushes_is_told_resolved_only_where_resolved_messages_are_on(
        tree: Route) -> None:
    # The first flush told DE; a second instance fires and resolves before the next flush: the dedup stage
    # sends its resolution (never its firing) to a contact point with resolved messages, nothing otherwise.
    first = payment("DE", 0)
    blip = alert(0.5, 1.0, alertname="Payment failure rate high", team="payments", severity="critical",
                 country="DE", gateway="stripe")
    sent = [n for n in dispatch(tree, [first, blip], T0 + timedelta(minutes=10)) if n.receiver == "slack-oncall"]
    assert [(len(n.firing), len(n.resolved)) for n in sent] == [(1, 0), (1, 1)]
    quiet = dispatch(tree, [first, blip], T0 + timedelta(minutes=10), no_resolved=frozenset({"slack-oncall"}))
    assert len([n for n in quiet if n.receiver == "slack-oncall"]) == 1
    assert without_resolved_messages(load(alerting_paths())) == frozenset()


def test_every_alert_of_an_incident_is_one_group_per_receiver(tree: Route) -> None:
    alerts = [
        alert(1, alertname="Incident open", team="store", severity="high", incident_id=INCIDENT,
              kind="payment_outage", countries="DE"),
        payment("DE", 2, incident_id=INCIDENT),
        alert(3, alertname="Orders below the expected band", team="store", severity="critical", country="DE",
              incident_id=INCIDENT),
        alert(4, alertname="High-severity anomaly", team="store", severity="critical", country="ALL",
              metric="orders_per_s", incident_id=INCIDENT),
        payment("FR", 2),  # not part of it: its own page
    ]
    groups = groups_of(dispatch(tree, alerts, T0 + timedelta(minutes=30)))
    incident = [g for g in groups if g.labels.get("incident_id") == INCIDENT]
    assert sorted(g.receiver for g in incident) == ["pagerduty-oncall", "shoppulse-actions", "slack-oncall"]
    actions = next(g for g in incident if g.receiver == "shoppulse-actions")
    assert {dict(a)["alertname"] for n in actions.notifications for a in n.firing} == {"Incident open"}  # the trigger
    slack = next(g for g in incident if g.receiver == "slack-oncall")
    assert len(slack.notifications[-1].firing) == 4
    assert slack.incident == {"incident_id": INCIDENT, "kind": "payment_outage", "countries": "DE"}
    assert sorted((g.receiver, g.labels.get("country")) for g in groups if g not in incident) == [
        ("pagerduty-oncall", "FR"), ("slack-oncall", "FR")]
    lines = notification_lines(dispatch(tree, alerts, T0 + timedelta(minutes=30)), T0)
    assert lines[0].startswith("Notifications as the policy tree sends them:")
    assert any(f"incident {INCIDENT[:8]} (payment_outage in DE)" in line for line in lines), lines


def test_an_empty_incident_id_is_no_incident_and_regex_matchers_are_anchored(tree: Route) -> None:
    labels = {"alertname": "x", "severity": "critical", "incident_id": ""}
    assert all("incident_id" not in r.group_by for r in tree.match(labels))
    assert tree.match({**labels, "severity": "critical-ish"})[0].receiver == "slack-oncall"
    assert [r.receiver for r in tree.match({**labels, "severity": "critical"})] == ["pagerduty-oncall",
                                                                                   "slack-oncall"]


def test_the_incident_rule_pages_every_kind_the_sidecar_names_and_no_other() -> None:
    # A kind the sidecar names has a title and a story; its fallback kinds (metric_up / metric_down, e.g.
    # carts_without_order_down) are moves that do not hurt the store and page no one.
    rule = next(r.item for r in load(alerting_paths()).rules() if r.item.get("uid") == "shoppulse-incident-open")
    sql = rule["data"][0]["model"]["rawSql"]
    paged = set(re.findall(r"'(\w+)'", sql[sql.index("kind IN"):]))
    assert paged == {kind for _metric, _sign, kind in KINDS} == set(TITLES)
