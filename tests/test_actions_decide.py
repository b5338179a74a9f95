"""What each policy does about an incident: triggers, guardrails (kill switches, blast radius, rate
limits, conflicts) and idempotency, decided the same way live and in a dry run."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from checkout import ROOT
from conftest import EndpointProcess
from shoppulse.actions.audit import read_actions, recent_actions, record_decisions, record_step
from shoppulse.actions.decide import Contributor, IncidentFacts, PastAction, decide
from shoppulse.actions.dry_run import dry_run, dry_run_report
from shoppulse.actions.policy import Policy

T0 = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)
FAILOVER = Policy.model_validate(yaml.safe_load((ROOT / "actions" / "payment-failover.yaml").read_text()))
PIX = Contributor("gateway", "pix", 0.97)


def outage(countries: tuple[str, ...] = ("BR",), *, severity: str = "high", contributors: tuple = (PIX,),
           kind: str = "payment_failures", resolved: datetime | None = None, serial: int = 1,
           metrics: tuple[str, ...] = ("payment_failure_rate", "orders_per_s"),
           confidence: float = 0.9999999) -> IncidentFacts:
    return IncidentFacts(uuid.UUID(int=serial), kind, countries, severity, T0, resolved, contributors, "", metrics,
                         confidence)


def history_of(decisions, step: str | None = None) -> list[PastAction]:
    return [PastAction(d.action_id, d.policy.name, d.country, step or d.outcome, d.at) for d in decisions]


def test_a_gateway_outage_proposes_the_failover_of_that_gateway_once() -> None:
    assert decide([FAILOVER], outage(), T0 + timedelta(minutes=1), []) == []  # not open for 2 minutes yet
    [decision] = decide([FAILOVER], outage(), T0 + timedelta(minutes=3), [])
    assert decision.outcome == "proposed" and decision.needs_approval and decision.country == "BR"
    assert decision.request == {"http": {"method": "POST", "path": "/admin/payments/failover", "body": {
        "country": "BR", "from_gateway": "pix", "reason": f"shoppulse incident {uuid.UUID(int=1)}"}}}
    assert decision.rollback["http"]["path"] == "/admin/payments/failback"
    assert "gateway pix carries 97 %" in decision.reason
    # every later update of the incident finds its action on record: proposed once
    assert decide([FAILOVER], outage(), T0 + timedelta(minutes=4), history_of([decision])) == []
    again = decide([FAILOVER], outage(), T0 + timedelta(minutes=3), [])[0]
    assert again.action_id == decision.action_id  # the same key for the same policy, incident and country


def test_a_flooded_campaign_proposes_its_pause_as_a_marketing_command() -> None:
    pause = Policy.model_validate(yaml.safe_load((ROOT / "actions" / "pause-campaign.yaml").read_text()))
    flooded = Contributor("campaign", "de-search", 0.93)
    incident = outage(("DE",), kind="campaign_spend_without_orders", contributors=(flooded,))
    [decision] = decide([FAILOVER, pause], incident, T0 + timedelta(minutes=3), [])
    assert decision.policy.name == "pause-campaign" and decision.needs_approval
    assert decision.request == {"kafka": {"topic": "shop.marketing.commands", "key": "de-search", "message": {
        "command": "pause_campaign", "campaign_id": "de-search", "country": "DE",
        "reason": f"shoppulse incident {uuid.UUID(int=1)}"}}}
    assert decision.rollback["kafka"]["message"]["command"] == "resume_campaign"
    # extra clicks spread over both campaigns name none that carries 80 %: nothing to pause
    spread = outage(("DE",), kind="campaign_spend_without_orders", contributors=(
        Contributor("campaign", "de-search", 0.6), Contributor("campaign", "de-social", 0.4)))
    assert decide([pause], spread, T0 + timedelta(minutes=3), []) == []


def test_a_chargeback_wave_holds_the_country_s_orders_for_review_and_other_refund_surges_do_not() -> None:
    review = Policy.model_validate(yaml.safe_load((ROOT / "actions" / "review-risky-orders.yaml").read_text()))
    chargebacks = outage(("US",), kind="refund_surge",
                         contributors=(Contributor("refund reason", "unauthorized", 0.9),))
    [decision] = decide([review], chargebacks, T0 + timedelta(minutes=3), [])
    assert decision.outcome == "proposed" and decision.needs_approval
    assert decision.request == {"http": {"method": "POST", "path": "/admin/orders/review", "body": {
        "country": "US", "reason": f"chargeback wave: shoppulse incident {uuid.UUID(int=1)}"}}}
    assert decision.rollback == {"http": {"method": "POST", "path": "/admin/orders/review/end",
                                          "body": {"country": "US"}}}
    damaged = outage(("US",), kind="refund_surge", contributors=(Contributor("refund reason", "damaged", 0.9),))
    assert decide([review], damaged, T0 + timedelta(minutes=3), []) == []  # a bad batch of goods: not fraud


def test_an_incident_below_the_policy_s_confidence_or_without_its_metric_proposes_nothing() -> None:
    at = T0 + timedelta(minutes=3)
    assert FAILOVER.trigger.min_confidence == 0.999999 and FAILOVER.trigger.metrics == ["payment_failure_rate"]
    assert decide([FAILOVER], outage(confidence=0.99999), at, []) == []  # not that rare (|z| 4.4): a human looks
    assert [d.outcome for d in decide([FAILOVER], outage(confidence=0.999999), at, [])] == ["proposed"]
    assert decide([FAILOVER], outage(metrics=("orders_per_s",)), at, []) == []  # no failure rate moved


def test_a_dry_run_judges_each_moment_by_the_version_of_the_incident_written_for_it() -> None:
    """As the live processor sees each update: an incident that reaches the policy's severity only later is
    proposed then, once; one whose kind a late region changed is judged by the kind it had when it qualified."""
    growing = [(T0 + timedelta(minutes=m), outage(severity=severity)) for m, severity in
               ((0, "medium"), (1, "medium"), (4, "high"), (6, "critical"))]
    [decision] = dry_run([FAILOVER], [growing[-1][1]], {growing[0][1].incident_id: growing})
    assert decision.at == T0 + timedelta(minutes=4) and decision.incident.severity == "high"
    assert dry_run([FAILOVER], [growing[-1][1]], {growing[0][1].incident_id: growing[:2]}) == []  # never high
    renamed = [(T0, outage()), (T0 + timedelta(minutes=9), outage(kind="sales_drop"))]
    [early] = dry_run([FAILOVER], [renamed[-1][1]], {renamed[0][1].incident_id: renamed})
    assert early.at == T0 + timedelta(minutes=2) and early.incident.kind == "payment_failures"
    assert dry_run([FAILOVER], [renamed[-1][1]]) == []  # judged by its latest version alone


def test_an_incident_the_policy_does_not_cover_proposes_nothing() -> None:
    at = T0 + timedelta(minutes=5)
    assert decide([FAILOVER], outage(severity="medium"), at, []) == []
    assert decide([FAILOVER], outage(contributors=(Contributor("gateway", "pix", 0.5),)), at, []) == []
    assert decide([FAILOVER], outage(contributors=(Contributor("failure reason", "gateway_error", 1.0),)),
                  at, []) == []  # every gateway failing alike: no gateway to fail over from
    assert decide([FAILOVER], outage(kind="checkout_latency"), at, []) == []
    assert decide([FAILOVER], outage(resolved=T0 + timedelta(minutes=4)), at, []) == []
    assert decide([FAILOVER], outage(("ALL",)), at, []) == []  # the store-wide series is no country to act in


def test_guardrails_refuse_and_say_why() -> None:
    at = T0 + timedelta(minutes=5)
    [blast] = decide([FAILOVER], outage(("BR", "ALL")), at, [])  # ALL is not a country it acts in
    assert blast.outcome == "proposed"
    wide = decide([FAILOVER], outage(("BR", "PL")), at, [])
    assert [d.outcome for d in wide] == ["refused", "refused"]
    assert "spans 2 countries, more than the 1 one action may touch" in wide[0].reason
    [killed] = decide([FAILOVER], outage(), at, [], kill_switch=True)
    assert killed.outcome == "refused" and "global kill switch" in killed.reason
    off = FAILOVER.model_copy(update={"enabled": False})
    assert "enabled: false" in decide([off], outage(), at, [])[0].reason


def test_rate_limits_count_the_last_hour_per_policy_and_per_country() -> None:
    at = T0 + timedelta(minutes=5)
    first = decide([FAILOVER], outage(serial=1), at, [])
    second = decide([FAILOVER], outage(serial=2), at + timedelta(minutes=10), history_of(first))
    assert second[0].outcome == "refused" and "in BR in the last hour (limits.per_country_per_hour)" in second[0].reason
    elsewhere = decide([FAILOVER], outage(("PL",), serial=3), at + timedelta(minutes=10), history_of(first))
    assert elsewhere[0].outcome == "proposed"
    third = decide([FAILOVER], outage(("SE",), serial=4), at + timedelta(minutes=20),
                   history_of(first) + history_of(elsewhere))
    assert third[0].outcome == "refused" and "2 action(s) of payment-failover in the last hour" in third[0].reason
    later = decide([FAILOVER], outage(serial=5), at + timedelta(minutes=61), history_of(first))
    assert later[0].outcome == "proposed"  # an hour on, the limit is free again


def test_a_conflicting_action_in_force_in_the_country_refuses_the_other() -> None:
    failback = FAILOVER.model_copy(update={"name": "payment-restore", "conflicts_with": ["payment-failover"]})
    at = T0 + timedelta(minutes=5)
    [failover] = decide([FAILOVER], outage(), at, [])
    [refused] = decide([failback], outage(serial=2), at, history_of([failover]))
    assert refused.outcome == "refused" and "payment-failover is in force in BR" in refused.reason
    # the other way round too: the conflict is declared on one side only
    [first] = decide([failback], outage(serial=3), at, [])
    [other] = [d for d in decide([FAILOVER, failback], outage(serial=4), at, history_of([first]))
               if d.policy.name == "payment-failover"]
    assert other.outcome == "refused" and "payment-restore is in force in BR" in other.reason
    # once rolled back it is no longer in force
    [free] = decide([failback], outage(serial=2), at, history_of([failover], step="rolled_back"))
    assert free.outcome == "proposed"


@pytest.mark.integration
def test_a_dry_run_over_stored_incidents_proposes_what_the_policies_would_have_done(
        clickhouse_endpoint: EndpointProcess) -> None:
    """Incidents as the sidecar stores them: the pix outage in BR proposes the failover two minutes in;
    an outage failing every gateway alike, a store-wide incident and a sales drop propose nothing; a
    second pix outage in BR within the hour is refused by the rate limit; one its detectors barely agreed on
    (its strongest anomaly scored 0.99: one usual point in a hundred is as unusual) proposes nothing."""
    _settings, client = clickhouse_endpoint.migrated("actions_dry_run")
    columns = ["incident_id", "kind", "countries", "metrics", "anomaly_ids", "opened_at", "resolved_at", "severity",
               "revenue_at_risk", "contributors", "contributor_dimensions", "contributor_values",
               "contributor_shares", "story", "as_of", "detected_at", "updated_at"]

    def row(serial: int, minute: int, kind: str, countries: list[str], dimensions: list[str], values: list[str],
            shares: list[float], severity: str = "critical") -> list:
        opened = T0 + timedelta(minutes=minute)
        return [uuid.UUID(int=serial), kind, countries, ["payment_failure_rate"], [], opened,
                opened + timedelta(minutes=8), severity, 100.0, [], dimensions, values, shares, "story", opened,
                opened, opened]

    anomaly_columns = ["anomaly_id", "metric", "country", "opened_at", "severity", "observed", "expected", "lower",
                       "upper", "score", "detectors", "updated_at", "incident_id"]
    # each incident's regions: its confidence is the strongest score (the pix outage's two regions, 0.6 and 0.9999999)
    client.insert("anomalies", [
        [uuid.UUID(int=100 + n), "payment_failure_rate", "BR", T0, "critical", 0.9, 0.05, 0.0, 0.1, score, [],
         T0, uuid.UUID(int=serial)] for n, (serial, score) in enumerate(((1, 0.6), (1, 0.9999999), (2, 1.0), (3, 1.0),
                                                                          (4, 1.0), (5, 0.9999999), (6, 0.99)))],
        column_names=anomaly_columns)
    client.insert("incidents", [
        row(1, 10, "payment_failures", ["BR"], ["gateway", "failure reason"], ["pix", "gateway_error"], [0.97, 1.0]),
        row(2, 30, "payment_failures", ["DE"], ["failure reason", "gateway", "gateway"],
            ["gateway_error", "adyen", "klarna"], [1.0, 0.34, 0.33]),
        row(3, 30, "payment_failures", ["ALL"], ["gateway"], ["pix"], [0.9]),
        row(4, 40, "sales_drop", ["US"], ["device"], ["app"], [1.0]),
        row(5, 50, "payment_failures", ["BR"], ["gateway"], ["adyen"], [0.95]),
        row(6, 70, "payment_failures", ["BR"], ["gateway"], ["pix"], [0.95]),  # its detectors barely agreed
    ], column_names=columns)
    lines = dry_run_report(client, [FAILOVER], T0, T0 + timedelta(hours=2), T0)
    assert lines[0] == "Actions the policies would have taken (dry run, 6 incident(s) stored):"
    assert lines[1].startswith("  +12m payment-failover in BR: proposed, awaiting approval by S0PAYMENTS — "
                               f"POST /admin/payments/failover (incident {uuid.UUID(int=1)}: payment_failures in BR")
    assert "gateway pix carries 97 %" in lines[1]
    assert lines[2].startswith("  +52m payment-failover in BR: refused") and "limits.per_country_per_hour" in lines[2]
    assert len(lines) == 3, lines
    quiet = dry_run_report(client, [FAILOVER], T0 + timedelta(hours=2), T0 + timedelta(hours=3), T0)
    assert quiet == ["Actions the policies would have taken (dry run, 0 incident(s) stored):",
                     "  none: no incident triggered a policy"]


@pytest.mark.integration
def test_the_audit_trail_keeps_every_step_and_gives_the_guardrails_their_history(
        clickhouse_endpoint: EndpointProcess) -> None:
    """Decisions and later steps are appended; the history read back is each action's latest step, so a
    restarted processor proposes nothing twice and counts its rate limits and conflicts as before."""
    _settings, client = clickhouse_endpoint.migrated("actions_audit")
    at = T0 + timedelta(minutes=5)
    [proposed] = decide([FAILOVER], outage(serial=1), at, [])
    record_decisions(client, [proposed], "live")
    record_decisions(client, decide([FAILOVER], outage(serial=2), at, history_of([proposed])), "live")
    [on_record] = [a for a in read_actions(client, at - timedelta(minutes=1)) if a.action_id == proposed.action_id]
    record_step(client, on_record, "approved", at + timedelta(minutes=1), actor="U0ONCALL")
    record_step(client, on_record, "executed", at + timedelta(minutes=2), response={"status": 200})
    history = recent_actions(client, at + timedelta(minutes=3), "live")
    assert sorted((a.policy, a.country, a.step, a.at) for a in history) == [
        ("payment-failover", "BR", "executed", at), ("payment-failover", "BR", "refused", at)]
    assert decide([FAILOVER], outage(serial=1), at + timedelta(minutes=4), history) == []  # on record: once
    assert recent_actions(client, at, "dry_run") == []  # a dry run's history is its own
    steps = client.query("SELECT step, actor, detail, request, response FROM action_audit ORDER BY at, step"
                         ).result_rows
    assert [s[0] for s in steps] == ["proposed", "refused", "approved", "executed"]
    assert steps[2][1] == "U0ONCALL" and "limits.per_country_per_hour" in steps[1][2]
    assert json.loads(steps[3][3])["http"]["body"]["from_gateway"] == "pix" and json.loads(steps[3][4]) == {
        "status": 200}
