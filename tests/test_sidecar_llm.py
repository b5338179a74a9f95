"""Insights through an OpenAI model (a local server speaking the chat-completions wire format): success,
cache, slow, 429, 500, malformed answer and an exhausted budget — each recorded in llm_calls, each
falling back to the template when the model cannot answer."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from clickhouse_connect.driver.client import Client

from conftest import EndpointProcess
from fake_openai import fake_openai
from shoppulse.sidecar.app import INSIGHT_COLUMNS
from shoppulse.sidecar.explain import InsightPayload, template_insight
from shoppulse.sidecar.llm import Insight, InsightWriter, cost_usd, prompt_for
from shoppulse.sidecar.rewording import Rewording

pytestmark = pytest.mark.integration
KEY = "sk-test-not-a-real-key"
OPENED = datetime(2026, 11, 25, 14, 5, tzinfo=UTC)


@pytest.fixture
def calls_db(clickhouse_endpoint: EndpointProcess) -> Iterator[Client]:
    _settings, client = clickhouse_endpoint.migrated("llm")
    yield client
    client.close()


def payload(observed: float = 0.62) -> InsightPayload:
    return InsightPayload("payment_failure_rate", "BR", observed, 0.03, round(100 * (observed / 0.03 - 1), 1), "60 s",
                          "local", [{"metric": "orders_per_s", "country": "BR", "z": -7.5, "delta_pct": -71.0,
                                     "correlation": -0.9}])


def writer(client: Client, url: str, budget: float = 5.0, timeout_s: float = 5.0, retries: int = 0) -> InsightWriter:
    return InsightWriter(client, KEY, "gpt-4o-mini", budget, timeout_s, retries, base_url=url)


def calls(client: Client) -> list[tuple]:
    return client.query("SELECT model, prompt_tokens, completion_tokens, cost_usd, latency_ms, cache_hit, error "
                        "FROM llm_calls ORDER BY ts").result_rows


def test_the_model_words_the_insight_from_aggregates_only_and_answers_are_cached(calls_db: Client) -> None:
    with fake_openai(KEY) as (url, server):
        llm = writer(calls_db, url)
        first = llm.write(payload(), OPENED, uuid.uuid4())
        assert (first.text, first.source) == (server.answer, "llm")
        request = server.requests[0]
        assert request["model"] == "gpt-4o-mini" and request["temperature"] == 0.2
        user = request["messages"][-1]
        assert user["role"] == "user" and json.loads(user["content"]) == payload().as_dict()
        again = llm.write(payload(), OPENED, uuid.uuid4())
        assert (again.text, again.source) == (server.answer, "llm-cache")
        assert len(server.requests) == 1
    (model, p_tokens, c_tokens, cost, _, hit, error), cached = calls(calls_db)
    assert (model, hit, error) == ("gpt-4o-mini", 0, "") and p_tokens > 0 and c_tokens > 0
    assert cost == cost_usd("gpt-4o-mini", p_tokens, c_tokens) > 0
    assert cached[5] == 1 and cached[3] == 0


@pytest.mark.parametrize(("mode", "error", "requests"), [
    ("slow", "timeout", 1), ("429", "rate_limited", 2), ("500", "http_500", 2), ("malformed", "malformed_response", 1),
])
def test_a_failing_model_falls_back_to_the_template(calls_db: Client, mode: str, error: str, requests: int) -> None:
    with fake_openai(KEY) as (url, server):
        server.mode, server.delay_s = mode, 1.5
        started = time.monotonic()
        insight = writer(calls_db, url, timeout_s=0.5, retries=0 if mode == "slow" else 1).write(
            payload(), OPENED, uuid.uuid4())
        assert time.monotonic() - started < 5
        assert (insight.text, insight.source) == (template_insight(payload(), OPENED), "template")
        assert len(server.requests) == requests
    [(_, _, _, cost, latency_ms, hit, recorded)] = calls(calls_db)
    assert (recorded, hit, cost) == (error, 0, 0)
    if mode == "slow":
        assert 400 <= latency_ms < 1500


def test_an_exhausted_budget_stops_paid_calls(calls_db: Client) -> None:
    calls_db.insert("llm_calls", [[datetime.now(UTC), uuid.uuid4(), None, "gpt-4o-mini", 1000, 100, Decimal("0.5"),
                                   900, 0, ""]],
                    column_names=["ts", "call_id", "anomaly_id", "model", "prompt_tokens", "completion_tokens",
                                  "cost_usd", "latency_ms", "cache_hit", "error"])
    with fake_openai(KEY) as (url, server):
        insight = writer(calls_db, url, budget=0.5).write(payload(0.7), OPENED, uuid.uuid4())
        assert insight.source == "template" and server.requests == []
    assert calls(calls_db)[-1][6] == "budget_exhausted"


def test_without_a_key_no_call_is_made(calls_db: Client) -> None:
    plain = InsightWriter(calls_db, None, "gpt-4o-mini", 5, 5, 0)
    assert plain.write(payload(), OPENED, uuid.uuid4()).source == "template"
    assert calls(calls_db) == []
    assert prompt_for(payload()).startswith('{"baseline":0.03,')


class HeldWriter:
    """A model whose answer for each payload waits until the test releases it."""

    def __init__(self) -> None:
        self.release: dict[float, threading.Event] = {}

    def write(self, payload: InsightPayload, opened_at: datetime, anomaly_id: uuid.UUID) -> Insight:
        self.release.setdefault(payload.observed, threading.Event()).wait(30)
        return Insight(f"the model's wording of {payload.observed}", "llm")


def test_a_slow_rewording_of_an_older_version_never_replaces_a_newer_one(calls_db: Client) -> None:
    """Version 1 and 2 of an incident's insight are written as templates and handed to the model; its
    answer about version 2 comes first, its answer about version 1 after: the insight keeps version 2."""
    model = HeldWriter()
    rewording = Rewording(model, calls_db, INSIGHT_COLUMNS)  # type: ignore[arg-type]
    insight_id, anomaly_id, incident_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def version(observed: float) -> list[object]:
        p = payload(observed)
        row: list[object] = [OPENED, insight_id, anomaly_id, p.metric, p.country, "critical",
                             template_insight(p, OPENED), "template", json.dumps(p.as_dict(), sort_keys=True),
                             incident_id]
        calls_db.insert("insights", [row], column_names=INSIGHT_COLUMNS)
        rewording.submit(p, OPENED, anomaly_id, row)
        return row

    def shown() -> tuple[str, str]:
        [(text, source)] = calls_db.query("SELECT text, source FROM insights FINAL").result_rows
        return str(text), str(source)

    version(0.62)
    version(0.81)
    model.release.setdefault(0.81, threading.Event()).set()
    deadline = time.monotonic() + 30
    while shown()[1] != "llm" and time.monotonic() < deadline:
        time.sleep(0.05)
    model.release.setdefault(0.62, threading.Event()).set()
    rewording.shutdown(wait=True)
    assert shown() == ("the model's wording of 0.81", "llm")
