"""Calls to the shop's admin API against a stand-in that enforces the Idempotency-Key contract
(draft-ietf-httpapi-idempotency-key-header-07): the failover is applied exactly once through lost
answers, outages and duplicate deliveries; refusals are final and say why."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import requests
import yaml

from checkout import ROOT
from shoppulse.actions.decide import Contributor, IncidentFacts, decide
from shoppulse.actions.execute import ShopAdminClient
from shoppulse.actions.policy import Policy
from shoppulse.devstack.shop_admin_standin import shop_admin_standin

TOKEN = "shop-admin-token"
FAILOVER = Policy.model_validate(yaml.safe_load((ROOT / "actions" / "payment-failover.yaml").read_text()))
T0 = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)


def proposal(gateway: str = "pix", serial: int = 1):
    incident = IncidentFacts(uuid.UUID(int=serial), "payment_failures", ("BR",), "critical", T0, None,
                             (Contributor("gateway", gateway, 0.97),), metrics=("payment_failure_rate",),
                             confidence=0.9999999)
    [decision] = decide([FAILOVER], incident, T0 + timedelta(minutes=3), [])
    return decision


def test_the_failover_is_applied_once_through_a_lost_answer_an_outage_and_a_duplicate() -> None:
    decision = proposal()
    with shop_admin_standin(TOKEN) as (url, shop):
        client = ShopAdminClient(url, TOKEN, pause_s=0.01)
        shop.fail_next = ["drop", "503"]  # applied but never answered; then the shop is down once
        outcome = client.send(decision.request, decision.action_id)
        assert outcome.ok and outcome.status == 200 and outcome.attempts == 3, outcome
        again = client.send(decision.request, decision.action_id)  # a duplicate delivery of the approval
        assert again.ok and again.body == outcome.body
        assert shop.effects == [("/admin/payments/failover", decision.request["http"]["body"])]
        assert shop.routes == {"BR": "pix"}
        back = client.send(decision.rollback, uuid.uuid5(decision.action_id, "rollback"))
        assert back.ok and shop.routes == {"BR": None} and len(shop.effects) == 2


def test_refusals_are_final_and_say_why() -> None:
    with shop_admin_standin(TOKEN) as (url, shop):
        client = ShopAdminClient(url, TOKEN, pause_s=0.01)
        wrong = proposal(gateway="stripe")  # BR does not pay through stripe
        refused = client.send(wrong.request, wrong.action_id)
        assert not refused.ok and refused.status == 422 and refused.attempts == 1
        assert refused.error == "the shop refused the call: HTTP 422" and "stripe" in refused.body["error"]
        decision = proposal(serial=2)
        other_payload = {"http": {**decision.request["http"], "body": {"country": "BR", "from_gateway": "adyen"}}}
        assert client.send(decision.request, decision.action_id).ok
        reused = client.send(other_payload, decision.action_id)  # the same key for another change
        assert reused.status == 422 and "another payload" in reused.body["error"]
        unauthorised = ShopAdminClient(url, "not-the-token").send(decision.request, uuid.uuid4())
        assert unauthorised.status == 401 and not unauthorised.ok
        assert len(shop.effects) == 1


def test_the_stand_in_refuses_what_the_idempotency_key_draft_refuses() -> None:
    with shop_admin_standin(TOKEN) as (url, shop):
        auth = {"Authorization": f"Bearer {TOKEN}"}
        body = {"country": "BR", "from_gateway": "pix"}
        missing = requests.post(f"{url}/admin/payments/failover", json=body, headers=auth, timeout=5)
        assert missing.status_code == 400 and "required" in missing.json()["error"]
        bare = requests.post(f"{url}/admin/payments/failover", json=body, timeout=5,
                             headers={**auth, "Idempotency-Key": str(uuid.uuid4())})  # not an sf-string
        assert bare.status_code == 400 and "Structured Field string" in bare.json()["error"]
        assert shop.effects == []


def test_no_answer_at_all_is_a_failure_after_the_retries() -> None:
    decision = proposal()
    with shop_admin_standin(TOKEN) as (url, shop):
        shop.fail_next = ["503"] * 4
        outcome = ShopAdminClient(url, TOKEN, attempts=4, pause_s=0.01).send(decision.request, decision.action_id)
    assert not outcome.ok and outcome.status is None and outcome.error == "HTTP 503 after 4 attempts"
    assert shop.effects == []


def test_a_review_of_new_orders_is_held_once_and_ended_by_its_rollback() -> None:
    review = Policy.model_validate(yaml.safe_load((ROOT / "actions" / "review-risky-orders.yaml").read_text()))
    incident = IncidentFacts(uuid.UUID(int=7), "refund_surge", ("US",), "high", T0, None,
                             (Contributor("refund reason", "unauthorized", 0.9),), metrics=("refunds_per_s",),
                             confidence=0.9999999)
    [decision] = decide([review], incident, T0 + timedelta(minutes=3), [])
    with shop_admin_standin(TOKEN) as (url, shop):
        client = ShopAdminClient(url, TOKEN, pause_s=0.01)
        rollback_key = uuid.uuid5(decision.action_id, "rollback")
        early = client.send(decision.rollback, rollback_key)  # nothing to end yet: refused, nothing changed
        assert early.status == 422 and "not under review" in early.body["error"] and shop.effects == []
        shop.fail_next = ["drop"]
        assert client.send(decision.request, decision.action_id).ok
        assert shop.reviews == {"US": f"chargeback wave: shoppulse incident {uuid.UUID(int=7)}"}
        assert len(shop.effects) == 1  # the lost answer's retry changed nothing twice
        assert client.send(decision.rollback, uuid.uuid4()).ok and shop.reviews == {}
        elsewhere = {"http": {**decision.request["http"], "body": {"country": "XX", "reason": "r"}}}
        assert client.send(elsewhere, uuid.uuid4()).status == 422
