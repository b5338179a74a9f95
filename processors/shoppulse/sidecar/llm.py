"""Insights in plain English: the template by default, an OpenAI model when ``OPENAI_API_KEY`` is set.

The model sees the structured payload only — metric, country, observed and expected values, the
change, the window and the correlated signals: aggregate numbers, never an event or a shopper. A
call has a timeout and the SDK's retries; answers are cached by prompt; a daily budget (UTC day,
from ``llm_calls``) stops paid calls once spent. Whatever goes wrong — timeout, rate limit, server
error, a malformed or empty answer, the budget — the template's text is used instead, so an
insight is never missing. Every call, cache hit and refusal is a row in ``llm_calls`` and a sample
in Prometheus.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import openai
from clickhouse_connect.driver.client import Client
from prometheus_client import Counter, Histogram

from shoppulse.sidecar.explain import InsightPayload, template_insight

log = logging.getLogger(__name__)

# USD per million tokens (input, output); an unknown model is priced as the dearest we know.
PRICES = {"gpt-4o-mini": (0.15, 0.60), "gpt-4.1-mini": (0.40, 1.60), "gpt-4o": (2.50, 10.00)}
MAX_ANSWER_CHARS = 600
CACHE_SIZE = 512
SYSTEM_PROMPT = (
    "You write one to three short sentences for an e-commerce operations wall display about an anomaly "
    "the monitoring found. Use only the numbers given. Say what changed, where, by how much against "
    "what was expected, what moved with it, and whether it looks local or store-wide. No greeting, "
    "no speculation beyond the signals, no markdown.")

LLM_CALLS = Counter("shoppulse_llm_calls", "Insight requests to the language model", ["model", "outcome"])
LLM_TOKENS = Counter("shoppulse_llm_tokens", "Tokens used", ["model", "kind"])
LLM_COST = Counter("shoppulse_llm_cost_usd", "Spend on the language model, USD", ["model"])
LLM_LATENCY = Histogram("shoppulse_llm_latency_seconds", "Latency of language-model calls", ["model"],
                        buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30))
CALL_COLUMNS = ["ts", "call_id", "anomaly_id", "model", "prompt_tokens", "completion_tokens", "cost_usd",
                "latency_ms", "cache_hit", "error"]


@dataclass(frozen=True)
class Insight:
    text: str
    source: str  # template | llm | llm-cache


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    price_in, price_out = PRICES.get(model, max(PRICES.values()))
    return Decimal(str(round((prompt_tokens * price_in + completion_tokens * price_out) / 1e6, 6)))


def prompt_for(payload: InsightPayload) -> str:
    return json.dumps(payload.as_dict(), sort_keys=True, separators=(",", ":"))


class InsightWriter:
    """Writes each insight's text, through the model when one is configured."""

    def __init__(self, clickhouse: Client, api_key: str | None, model: str, daily_budget_usd: float,
                 timeout_s: float, max_retries: int, base_url: str | None = None) -> None:
        self._clickhouse = clickhouse
        self.model = model
        self.daily_budget = Decimal(str(daily_budget_usd))
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s,
                                     max_retries=max_retries) if api_key else None
        self._cache: OrderedDict[str, str] = OrderedDict()

    def write(self, payload: InsightPayload, opened_at: datetime, anomaly_id: uuid.UUID) -> Insight:
        template = template_insight(payload, opened_at)
        if self._client is None:
            return Insight(template, "template")
        prompt = prompt_for(payload)
        key = hashlib.sha256(f"{self.model}\n{prompt}".encode()).hexdigest()
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self._record(anomaly_id, 0, 0, 0.0, cache_hit=True, error="")
            return Insight(cached, "llm-cache")
        if self.spent_today() >= self.daily_budget:
            self._record(anomaly_id, 0, 0, 0.0, cache_hit=False, error="budget_exhausted")
            return Insight(template, "template")
        started = time.perf_counter()
        try:
            answer = self._client.chat.completions.create(
                model=self.model, temperature=0.2, max_tokens=160,
                messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}])
            text = (answer.choices[0].message.content or "").strip() if answer.choices else ""
            usage = answer.usage
            prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            if not text or len(text) > MAX_ANSWER_CHARS:
                raise ValueError(f"unusable answer ({len(text)} characters)")
        except Exception as exc:  # every failure falls back to the template, with its reason recorded
            error = _reason(exc)
            self._record(anomaly_id, 0, 0, time.perf_counter() - started, cache_hit=False, error=error)
            log.warning("llm insight failed, template used", extra={"model": self.model, "error": error})
            return Insight(template, "template")
        self._record(anomaly_id, prompt_tokens, completion_tokens, time.perf_counter() - started,
                     cache_hit=False, error="")
        self._cache[key] = text
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return Insight(text, "llm")

    def spent_today(self) -> Decimal:
        rows = self._clickhouse.query("SELECT sum(cost_usd) FROM llm_calls WHERE ts >= toStartOfDay(now64(3))"
                                      ).result_rows
        return Decimal(str(rows[0][0] or 0))

    def _record(self, anomaly_id: uuid.UUID, prompt_tokens: int, completion_tokens: int, seconds: float,
                cache_hit: bool, error: str) -> None:
        cost = cost_usd(self.model, prompt_tokens, completion_tokens)
        outcome = "cache_hit" if cache_hit else (error or "ok")
        LLM_CALLS.labels(self.model, outcome).inc()
        LLM_TOKENS.labels(self.model, "prompt").inc(prompt_tokens)
        LLM_TOKENS.labels(self.model, "completion").inc(completion_tokens)
        LLM_COST.labels(self.model).inc(float(cost))
        if not cache_hit and error != "budget_exhausted":
            LLM_LATENCY.labels(self.model).observe(seconds)
        self._clickhouse.insert("llm_calls", [[datetime.now(UTC), uuid.uuid4(), anomaly_id, self.model, prompt_tokens,
                                               completion_tokens, cost, int(seconds * 1000), int(cache_hit), error]],
                                column_names=CALL_COLUMNS)


def _reason(exc: Exception) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.APIStatusError):
        return f"http_{exc.status_code}"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError | ValueError | AttributeError
                  | TypeError | IndexError):
        return "malformed_response"
    return type(exc).__name__
