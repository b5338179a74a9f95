"""The actions processor over real ClickHouse and a shop admin API stand-in: a payment-outage
incident proposes the failover; approval executes it exactly once (also when approved twice, and when
the processor died between the call and its record); it rolls back when the incident resolves or
the KPI has not recovered; a rejected or expired proposal does nothing; a dry-run policy sends
nothing; every step is in the audit table."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from clickhouse_connect.driver.client import Client
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic

from checkout import ROOT
from conftest import EndpointProcess, store_region
from shoppulse.actions.approvals import answer, as_listed
from shoppulse.actions.audit import read_actions
from shoppulse.actions.commands import KafkaCommandSender
from shoppulse.actions.execute import ShopAdminClient
from shoppulse.actions.policy import Policy
from shoppulse.actions.processor import ActionsProcessor
from shoppulse.actions.slack import SlackApprovals
from shoppulse.devstack.shop_admin_standin import ShopState, shop_admin_standin
from shoppulse.devstack.slack_standin import slack_standin

pytestmark = pytest.mark.integration
TOKEN = "shop-admin-token"
SHIPPED = yaml.safe_load((ROOT / "actions" / "payment-failover.yaml").read_text())
LIVE = Policy.model_validate({**SHIPPED, "mode": "live"})
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)  # within the tables' TTL
COLUMNS = ["incident_id", "kind", "countries", "metrics", "anomaly_ids", "opened_at", "resolved_at", "severity",
           "revenue_at_risk", "contributors", "contributor_dimensions", "contributor_values", "contributor_shares",
           "story", "as_of", "detected_at", "updated_at"]


@pytest.fixture
def db(clickhouse_endpoint: EndpointProcess, request: pytest.FixtureRequest) -> Iterator[Client]:
    _settings, client = clickhouse_endpoint.migrated(f"actions_{request.node.name[5:40]}")
    yield client
    client.close()


@pytest.fixture
def shop() -> Iterator[tuple[ShopAdminClient, ShopState]]:
    with shop_admin_standin(TOKEN) as (url, state):
        yield ShopAdminClient(url, TOKEN, pause_s=0.01), state


def store_incident(client: Client, serial: int, country: str = "BR", resolved: datetime | None = None,
                   version: datetime | None = None, gateway: str = "pix") -> uuid.UUID:
    incident_id = uuid.UUID(int=serial)
    client.insert("incidents", [[incident_id, "payment_failures", [country], ["payment_failure_rate"], [], T0, resolved,
                                 "critical", 500.0, [f"gateway {gateway}: 97 % of the extra failures"], ["gateway"],
                                 [gateway], [0.97], "story", T0, T0, version or T0]], column_names=COLUMNS)
    store_region(client, incident_id, country, T0)
    return incident_id


def record_approval(client: Client, policies: list[Policy], action_id: uuid.UUID, approve: bool, approver: str,
                    at: datetime) -> str:
    """An answer as ``shoppulse actions approve|reject --as approver`` gives it."""
    return answer(client, policies, action_id, approve, at, approver,
                  as_listed(approver), "cli").said


def steps(client: Client, incident_id: uuid.UUID) -> list[tuple[str, str]]:
    return [(str(step), str(actor)) for step, actor in client.query(
        "SELECT step, actor FROM action_audit WHERE incident_id = {i:UUID} ORDER BY at, indexOf(['proposed', "
        "'refused', 'approved', 'rejected', 'expired', 'executed', 'failed', 'rolled_back'], step)",
        parameters={"i": incident_id}).result_rows]


def test_approved_failover_runs_once_and_rolls_back_when_the_incident_resolves(db: Client, shop) -> None:
    client, state = shop
    processor = ActionsProcessor(db, [LIVE], client)
    incident = store_incident(db, 1)
    processor.step(T0 + timedelta(minutes=1))  # open for a minute: the policy waits two
    assert steps(db, incident) == []
    processor.step(T0 + timedelta(minutes=3))
    processor.step(T0 + timedelta(minutes=4))  # still awaiting approval: nothing sent, nothing new
    assert steps(db, incident) == [("proposed", "shoppulse")] and state.requests == 0
    [action] = read_actions(db, T0)
    # The incident's contributors change before the approval: what runs is what was proposed (pix).
    store_incident(db, 1, version=T0 + timedelta(minutes=4, seconds=30), gateway="adyen")
    at = T0 + timedelta(minutes=5)
    assert "may not approve" in record_approval(db, [LIVE], action.action_id, True, "U0SOMEONE", at)
    assert record_approval(db, [LIVE], action.action_id, True, "S0PAYMENTS", at).endswith("approved by S0PAYMENTS")
    assert "not awaiting approval" in record_approval(db, [LIVE], action.action_id, True, "S0PAYMENTS", at)
    # The processor died after the call and before its record: the next pass calls again, with the same key.
    assert action.request["http"]["body"]["from_gateway"] == "pix"  # as proposed, whatever the incident says now
    assert client.send(action.request, action.action_id).ok
    processor.step(T0 + timedelta(minutes=6))
    processor.step(T0 + timedelta(minutes=7))
    assert steps(db, incident) == [("proposed", "shoppulse"), ("approved", "S0PAYMENTS"), ("executed", "shoppulse")]
    assert state.effects == [("/admin/payments/failover", {"country": "BR", "from_gateway": "pix",
                                                           "reason": f"shoppulse incident {incident}"})]
    store_incident(db, 1, resolved=T0 + timedelta(minutes=8), version=T0 + timedelta(minutes=8))
    processor.step(T0 + timedelta(minutes=9))
    processor.step(T0 + timedelta(minutes=10))
    assert steps(db, incident)[-1] == ("rolled_back", "shoppulse") and len(steps(db, incident)) == 4
    assert state.routes == {"BR": None} and len(state.effects) == 2
    detail = db.query("SELECT detail, response FROM action_audit WHERE step = 'rolled_back'").result_rows[0]
    assert detail[0] == "rolled back: the incident resolved" and '"status": 200' in detail[1]


def executed_failover(db: Client, shop_client: ShopAdminClient, serial: int) -> tuple[ActionsProcessor, uuid.UUID]:
    """A failover proposed at +3 min, approved at +4, executed at +5; the processor and its incident."""
    processor = ActionsProcessor(db, [LIVE], shop_client)
    incident = store_incident(db, serial)
    processor.step(T0 + timedelta(minutes=3))
    [action] = [a for a in read_actions(db, T0) if a.incident_id == incident]
    record_approval(db, [LIVE], action.action_id, True, "S0PAYMENTS", T0 + timedelta(minutes=4))
    processor.step(T0 + timedelta(minutes=5))
    return processor, incident


def test_an_action_whose_kpi_does_not_recover_is_rolled_back(db: Client, shop) -> None:
    client, state = shop
    processor, incident = executed_failover(db, client, 2)
    processor.step(T0 + timedelta(minutes=14))  # 9 minutes after: still waiting
    assert [s for s, _ in steps(db, incident)] == ["proposed", "approved", "executed"]
    processor.step(T0 + timedelta(minutes=15))
    assert [s for s, _ in steps(db, incident)][-1] == "rolled_back" and state.routes == {"BR": None}
    reason = db.query("SELECT detail FROM action_audit WHERE step = 'rolled_back'").result_rows[0][0]
    assert reason == "rolled back: the incident is still open 10m after the action: not recovered"


def test_a_rejected_or_expired_proposal_does_nothing(db: Client, shop) -> None:
    client, state = shop
    processor = ActionsProcessor(db, [LIVE], client)
    rejected, expired = store_incident(db, 3), store_incident(db, 4, country="DE")
    processor.step(T0 + timedelta(minutes=3))
    ids = {a.incident_id: a.action_id for a in read_actions(db, T0)}
    said = record_approval(db, [LIVE], ids[rejected], False, "S0PAYMENTS", T0 + timedelta(minutes=4))
    assert said.endswith("rejected by S0PAYMENTS")
    processor.step(T0 + timedelta(minutes=17))  # DE's proposal was made at +3m and expires after 15
    processor.step(T0 + timedelta(minutes=18))
    assert "expired" in record_approval(db, [LIVE], ids[expired], True, "S0PAYMENTS", T0 + timedelta(minutes=19))
    assert steps(db, rejected) == [("proposed", "shoppulse"), ("rejected", "S0PAYMENTS")]
    assert steps(db, expired) == [("proposed", "shoppulse"), ("expired", "shoppulse")]
    assert state.requests == 0


def test_a_dry_run_policy_records_what_it_would_do_and_sends_nothing(db: Client, shop) -> None:
    client, state = shop
    dry = Policy.model_validate(SHIPPED)
    processor = ActionsProcessor(db, [dry], client)
    incident = store_incident(db, 5)
    for minute in (3, 4):
        processor.step(T0 + timedelta(minutes=minute))
    store_incident(db, 5, resolved=T0 + timedelta(minutes=5), version=T0 + timedelta(minutes=5))
    processor.step(T0 + timedelta(minutes=6))
    assert steps(db, incident) == [("proposed", "shoppulse"), ("executed", "shoppulse"),
                                   ("rolled_back", "shoppulse")]
    assert {m for (m,) in db.query("SELECT DISTINCT mode FROM action_audit").result_rows} == {"dry_run"}
    assert state.requests == 0


def test_the_kill_switch_refuses_and_audits_and_stops_what_was_approved(db: Client, shop) -> None:
    client, state = shop
    processor = ActionsProcessor(db, [LIVE], client, kill_switch=True)
    incident = store_incident(db, 6)
    processor.step(T0 + timedelta(minutes=3))
    processor.step(T0 + timedelta(minutes=4))
    assert steps(db, incident) == [("refused", "shoppulse")] and state.requests == 0
    approved = store_incident(db, 7, country="DE")
    ActionsProcessor(db, [LIVE], client).step(T0 + timedelta(minutes=5))  # proposed before the switch
    [action] = [a for a in read_actions(db, T0) if a.incident_id == approved]
    record_approval(db, [LIVE], action.action_id, True, "S0PAYMENTS", T0 + timedelta(minutes=6))
    processor.step(T0 + timedelta(minutes=7))  # the switch is on: the approved action does not run
    assert [s for s, _ in steps(db, approved)] == ["proposed", "approved"] and state.requests == 0


def test_a_live_command_policy_produces_its_command_once_per_key_and_its_rollback(db: Client,
                                                                                   kafka_bootstrap: str) -> None:
    """A policy acting through a Kafka command topic: the command and its rollback land on the topic with
    their idempotency keys; a crash before the record sends the command again with the same key."""
    topic = f"shop.commands.{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    commands = {"kafka": {"topic": topic, "key": "{country}", "message": {"command": "pause_payment_gateway",
                                                                          "country": "{country}",
                                                                          "gateway": "{contributor}"}}}
    undo = {"kafka": {"topic": topic, "key": "{country}", "message": {"command": "resume_payment_gateway",
                                                                      "country": "{country}",
                                                                      "gateway": "{contributor}"}}}
    policy = Policy.model_validate({**SHIPPED, "mode": "live", "approval": {"required": False}, "action": commands,
                                    "rollback": {"when": ["incident_resolved"], **undo}})
    sender = KafkaCommandSender(kafka_bootstrap)
    incident = store_incident(db, 8)
    crashed = ActionsProcessor(db, [policy], None, commands=sender)
    crashed._record = lambda *_args, **_kwargs: None  # type: ignore[method-assign]  # dies before every record
    crashed.step(T0 + timedelta(minutes=3))  # proposal recorded by decide; the execution's record is lost
    processor = ActionsProcessor(db, [policy], None, commands=sender)
    processor.step(T0 + timedelta(minutes=3, seconds=5))
    store_incident(db, 8, resolved=T0 + timedelta(minutes=6), version=T0 + timedelta(minutes=6))
    processor.step(T0 + timedelta(minutes=7))
    assert [s for s, _ in steps(db, incident)] == ["proposed", "executed", "rolled_back"]
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    received = [(m.key.decode(), json.loads(m.value)["command"], dict(m.headers)["Idempotency-Key"].decode())
                for m in consumer]
    consumer.close()
    [action] = read_actions(db, T0)
    key, rollback = str(action.action_id), str(uuid.uuid5(action.action_id, "rollback"))
    assert received == [("BR", "pause_payment_gateway", key), ("BR", "pause_payment_gateway", key),
                        ("BR", "resume_payment_gateway", rollback)]  # the repeat carries the same key
    response = db.query("SELECT response FROM action_audit WHERE step = 'executed'").result_rows[0][0]
    assert json.loads(response)["body"] == {"topic": topic, "partition": 0, "offset": 1}
    assert "does not exist" in KafkaCommandSender(kafka_bootstrap).send(
        {"kafka": {"topic": "shop.no-such-topic", "key": "BR", "message": {}}}, uuid.uuid4()).error


def test_an_action_on_an_incident_open_for_hours_is_still_rolled_back_when_it_resolves(db: Client, shop) -> None:
    client, state = shop
    processor, incident = executed_failover(db, client, 9)
    later = T0 + timedelta(hours=9)  # the incident opened 9 h ago, the action's last step was 9 h ago
    store_incident(db, 9, resolved=later, version=later)
    processor.step(later + timedelta(minutes=1))
    assert [s for s, _ in steps(db, incident)] == ["proposed", "approved", "executed", "rolled_back"]
    assert state.routes == {"BR": None}


def test_a_rate_limited_approval_request_waits_for_slack_s_retry_after(db: Client, shop) -> None:
    client, _state = shop
    with slack_standin("xoxb-bot", "signing", {"C0OK": True}, {}) as (api, slack):
        slack.rate_limit_next = 1  # 429, Retry-After: 1
        processor = ActionsProcessor(db, [LIVE], client, slack=SlackApprovals("xoxb-bot", "C0OK", "signing", api))
        incident = store_incident(db, 10)
        at = T0 + timedelta(minutes=3)
        processor.step(at)
        processor.step(at + timedelta(milliseconds=500))  # within Retry-After: Slack is not called again
        assert slack.calls == ["chat.postMessage"] and steps(db, incident) == [("proposed", "shoppulse")]
        processor.step(at + timedelta(seconds=2))
        assert slack.calls == ["chat.postMessage", "chat.postMessage"] and len(slack.messages) == 1
        assert [s for s, _ in steps(db, incident)] == ["proposed", "approval_requested"]
