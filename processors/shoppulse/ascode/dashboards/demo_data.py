"""Demo data for the dashboards: every table they read, filled with plausible, seeded numbers.

The store's shape follows the load generator's markets (traffic share, seasonality by local
hour, payment gateways); the last hours hold a scripted payment outage in one country, the
sidecar's anomaly and insight about it, its expected band and some LLM calls. It is written
through clickhouse-connect like any other client, so the materialized views fill the rollups.
Used by ``shoppulse dashboards lint`` (every query must return a result that fits its panel),
``preview`` and ``bench dashboards``.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from clickhouse_connect.driver.client import Client

from shoppulse.loadgen.markets import MARKETS, Market, seasonal_factor
from shoppulse.loadgen.shoppers import AD_SHARE, CAMPAIGN_CHANNELS, REFUND_REASONS, REFUND_SHARE, campaign_id
from shoppulse.sidecar.calendar_table import show as show_calendar
from shoppulse.sidecar.event_calendar import Calendar, KnownEvent

EVENTS_PER_S = 300.0  # the local stack's default load
INSERT_CHUNK = 100_000


@dataclass(frozen=True)
class DemoIncident:
    country: str
    start: datetime
    end: datetime

    def active(self, when: datetime) -> bool:
        return self.start <= when < self.end


@dataclass(frozen=True)
class DemoPlan:
    now: datetime
    seconds_history: timedelta = timedelta(hours=3)  # second-level tables
    minutes_history: timedelta = timedelta(days=8)  # minute rollups (7-day baselines need 8 days)
    events_per_s: float = EVENTS_PER_S
    seed: int = 7
    closed_sessions_history: timedelta = timedelta(minutes=10)  # single sessions; sessions_1m holds the rest

    @cached_property
    def incident(self) -> DemoIncident:
        start = (self.now - timedelta(minutes=100)).replace(second=0, microsecond=0)
        return DemoIncident("DE", start, start + timedelta(minutes=15))


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _binomial(rng: random.Random, n: int, p: float) -> int:
    if n <= 0 or p <= 0:
        return 0
    if p >= 1:
        return n
    if p > 0.5:
        return n - _binomial(rng, n, 1 - p)
    mean = n * p
    if mean * (1 - p) > 9:
        return min(n, max(0, round(rng.gauss(mean, math.sqrt(mean * (1 - p))))))
    # exact: count the successes by the geometric gaps between them
    successes, trial, log_q = 0, 0, math.log1p(-p)
    while True:
        trial += int(math.log(1.0 - rng.random()) / log_q) + 1
        if trial > n:
            return successes
        successes += 1


def _revenue(rng: random.Random, orders: int) -> Decimal:
    """The sum of ``orders`` order values, each uniform on 20..110."""
    if orders > 30:
        total = rng.gauss(65 * orders, math.sqrt(orders * 90 ** 2 / 12))
    else:
        total = sum(rng.uniform(20, 110) for _ in range(orders))
    return Decimal(total).quantize(Decimal("0.0001"))


_SHARES = {country: market.weight / sum(m.weight for m in MARKETS.values()) for country, market in MARKETS.items()}


def _share(country: str) -> float:
    return _SHARES[country]


def _funnel(rng: random.Random, views: int, failing: bool) -> list[int]:
    carts = _binomial(rng, views, 0.25)
    removes = _binomial(rng, carts, 0.1)
    checkouts = _binomial(rng, carts, 0.5)
    attempts = _binomial(rng, checkouts, 0.9)
    failures = _binomial(rng, attempts, 0.93 if failing else 0.03)
    orders = attempts - failures
    items = orders + _binomial(rng, orders, 0.6)
    return [views, carts, removes, checkouts, attempts, failures, orders, items]


def metric_rows(plan: DemoPlan, start: datetime, end: datetime, step: timedelta) -> list[list[Any]]:
    """metrics_1s-shaped rows (without source columns) per country every ``step``."""
    rng = random.Random(plan.seed)
    rows: list[list[Any]] = []
    seconds = step.total_seconds()
    when = start
    while when < end:
        for country, market in MARKETS.items():
            lam = plan.events_per_s * _share(country) * seasonal_factor(market, when) * 0.55 * seconds
            counts = _funnel(rng, poisson(rng, lam), plan.incident.country == country and plan.incident.active(when))
            rows.append([when, country, *counts, _revenue(rng, counts[6])])
        when += step
    return rows


def session_rows(plan: DemoPlan, start: datetime, end: datetime, step: timedelta) -> list[list[Any]]:
    """sessions_1m rows: sessions, with a cart, abandoned, converted per country every ``step``."""
    rng = random.Random(plan.seed + 1)
    rows: list[list[Any]] = []
    when = start
    while when < end:
        for country, market in MARKETS.items():
            lam = plan.events_per_s / 6 * _share(country) * seasonal_factor(market, when) * step.total_seconds()
            sessions = poisson(rng, lam)
            with_cart = _binomial(rng, sessions, 0.35)
            failing = plan.incident.country == country and plan.incident.active(when)
            converted = _binomial(rng, with_cart, 0.03 if failing else 0.3)
            rows.append([when, country, sessions, with_cart, with_cart - converted, converted])
        when += step
    return rows


def _insert(client: Client, table: str, columns: list[str], rows: list[list[Any]],
            progress: Callable[[str], None]) -> None:
    for index in range(0, len(rows), INSERT_CHUNK):
        client.insert(table, rows[index:index + INSERT_CHUNK], column_names=columns)
    progress(f"{table}: {len(rows):,} rows")


METRIC_COLUMNS = ["ts", "country", "product_views", "cart_adds", "cart_removes", "checkouts", "payment_attempts",
                  "payment_failures", "orders", "items", "revenue"]


def load_demo_data(client: Client, plan: DemoPlan, progress: Callable[[str], None] = lambda _: None) -> None:
    """Fill every table the dashboards read; the database must be migrated and empty."""
    now = plan.now.replace(microsecond=0)
    recent = now - plan.seconds_history
    history = (now - plan.minutes_history).replace(second=0)
    final_until = now - timedelta(seconds=4)  # the last seconds are still in their grace period: live only

    _insert(client, "metrics_1m", METRIC_COLUMNS,
            metric_rows(plan, history, recent.replace(second=0), timedelta(minutes=1)), progress)
    seconds = metric_rows(plan, recent.replace(second=0), now, timedelta(seconds=1))
    sourced = [[*row, 0, offset] for offset, row in enumerate(seconds)]
    _insert(client, "metrics_1s", [*METRIC_COLUMNS, "src_partition", "src_offset"],
            [row for row in sourced if row[0] < final_until], progress)
    _insert(client, "metrics_live", [*METRIC_COLUMNS, "src_partition", "src_offset"],
            [row for row in sourced if row[0] >= final_until - timedelta(seconds=10)], progress)
    # the closed sessions of the last minutes fill their sessions_1m minutes through the materialized view
    closed_from = (now - plan.closed_sessions_history).replace(second=0)
    _insert(client, "sessions_1m", ["ts", "country", "sessions", "with_cart", "abandoned", "converted"],
            session_rows(plan, history, closed_from, timedelta(minutes=1)), progress)
    _insert(client, "sessions", ["session_end", "session_start", "session_id", "country", "events", "cart_adds",
                                 "checkouts", "purchased", "abandoned", "revenue", "src_partition", "src_offset"],
            _closed_sessions(plan, closed_from, final_until), progress)
    _insert(client, "payment_latency_1s", ["ts", "country", "gateway", "attempts", "failures", "bucket_keys",
                                           "bucket_counts", "src_partition", "src_offset"],
            _payment_rows(plan, recent, final_until), progress)
    _insert(client, "segment_metrics_1s", ["ts", "country", "dimension", "segment", "orders", "revenue", "ad_clicks",
                                           "ad_spend", "src_partition", "src_offset"],
            _campaign_rows(plan, recent, final_until), progress)
    _insert(client, "segment_metrics_1s", ["ts", "country", "dimension", "segment", "refunds", "refunded",
                                           "src_partition", "src_offset"],
            _refund_rows(plan, recent, final_until), progress)
    _insert(client, "late_events", ["event_time", "country", "event_type", "late_by_ms", "src_partition",
                                    "src_offset"], _late_rows(plan, recent, now), progress)
    _insert(client, "dead_letters", ["received_at", "reason", "detail", "size_bytes", "sha256", "src_partition",
                                     "src_offset"], _dead_letter_rows(plan, recent, now), progress)
    _insert(client, "expected_band", ["ts", "country", "metric", "kind", "expected", "lower", "upper",
                                      "fitted_at"], _band_rows(plan, recent, now), progress)
    _insert(client, "baselines_how", ["country", "metric", "hour_of_week", "mean", "stddev", "samples",
                                      "updated_at"], _baseline_rows(plan), progress)
    anomalies, insights = _incident_outputs(plan)
    _insert(client, "anomalies", ["anomaly_id", "metric", "country", "opened_at", "closed_at", "severity",
                                  "observed", "expected", "lower", "upper", "score", "detectors", "updated_at"],
            anomalies, progress)
    _insert(client, "insights", ["created_at", "insight_id", "anomaly_id", "metric", "country", "severity", "text",
                                 "source", "payload"], insights, progress)
    _insert(client, "incidents", ["incident_id", "kind", "countries", "metrics", "anomaly_ids", "opened_at",
                                  "resolved_at", "severity", "revenue_at_risk", "story", "as_of", "detected_at",
                                  "updated_at", "contributors"], _incident_rows(plan), progress)
    _insert(client, "action_audit", ["at", "action_id", "policy", "incident_id", "country", "step", "mode", "actor",
                                      "detail", "request", "rollback", "response"], action_rows(plan), progress)
    _insert(client, "llm_calls", ["ts", "call_id", "anomaly_id", "model", "prompt_tokens", "completion_tokens",
                                  "cost_usd", "latency_ms", "cache_hit", "error"], _llm_rows(plan), progress)
    _insert(client, "component_heartbeats", ["ts", "component", "state", "address", "pid", "detail"],
            _heartbeats(now), progress)
    show_calendar(client, demo_calendar(plan), now)


def demo_calendar(plan: DemoPlan) -> Calendar:
    """A campaign in GB in the last hours, and a holiday of JP's that began this morning (its time)."""
    tokyo = plan.now.astimezone(ZoneInfo("Asia/Tokyo")).replace(hour=0, minute=0, second=0, microsecond=0)
    sale = (plan.now - timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    return Calendar((KnownEvent(name="Autumn sale e-mail", kind="campaign", countries=["GB"], level=2.0, start=sale,
                                end=sale + timedelta(hours=3)),
                     KnownEvent(name="Culture Day", kind="holiday", countries=["JP"], start=tokyo,
                                end=tokyo + timedelta(days=1))))


def _closed_sessions(plan: DemoPlan, start: datetime, end: datetime) -> list[list[Any]]:
    rng = random.Random(plan.seed + 2)
    rows: list[list[Any]] = []
    when = start
    offset = 0
    while when < end:
        for country in MARKETS:
            for _ in range(poisson(rng, plan.events_per_s / 6 * _share(country) * 10)):
                carts = 1 + _binomial(rng, 2, 0.35) if rng.random() < 0.35 else 0  # as session_rows' with_cart
                purchased = int(carts > 0 and rng.random() < 0.3)
                length = timedelta(seconds=rng.uniform(20, 600))
                rows.append([when, when - length, uuid.UUID(int=rng.getrandbits(128)).hex, country,
                             rng.randint(1, 12), carts, carts * purchased, purchased, int(carts > 0 and not purchased),
                             Decimal(round(rng.uniform(20, 110), 2)) * purchased, 0, offset])
                offset += 1
        when += timedelta(seconds=10)
    return rows


def _every(plan: DemoPlan, start: datetime, end: datetime, step: timedelta, seed: int,
           rows_of: Callable[[random.Random, datetime, str, Market], list[list[Any]]]) -> list[list[Any]]:
    """``rows_of(rng, when, country, market)`` for each country every ``step`` from ``start`` to ``end``, each row
    with its source partition and offset (as the sink writes them)."""
    rng = random.Random(plan.seed + seed)
    rows: list[list[Any]] = []
    when = start
    while when < end:
        for country, market in MARKETS.items():
            rows += [[*row, 0, len(rows) + index] for index, row in enumerate(rows_of(rng, when, country, market))]
        when += step
    return rows


def _payment_rows(plan: DemoPlan, start: datetime, end: datetime) -> list[list[Any]]:
    def rows_of(rng: random.Random, when: datetime, country: str, market: Market) -> list[list[Any]]:
        failing = plan.incident.country == country and plan.incident.active(when)
        found = []
        for gateway in market.gateways:
            attempts = poisson(rng, plan.events_per_s * _share(country) * 0.02 * 5 / len(market.gateways)) + 1
            failures = _binomial(rng, attempts, 0.93 if failing else 0.03)
            latencies = [rng.lognormvariate(math.log(900 if failing else 280), 0.45) for _ in range(attempts)]
            buckets: dict[int, int] = {}
            for latency in latencies:
                key = int(math.log(max(latency, 1.0), 1.1))
                buckets[key] = buckets.get(key, 0) + 1
            keys = sorted(buckets)
            found.append([when, country, gateway, attempts, failures, keys, [buckets[k] for k in keys]])
        return found

    return _every(plan, start, end, timedelta(seconds=5), 3, rows_of)


def _campaign_rows(plan: DemoPlan, start: datetime, end: datetime) -> list[list[Any]]:
    """Each country's campaigns every 5 seconds (segment_metrics_1s, dimension 'campaign'): paid clicks, their
    cost, and the orders and revenue attributed to them; the outage country's paid visits pay no more."""
    def rows_of(rng: random.Random, when: datetime, country: str, market: Market) -> list[list[Any]]:
        failing = plan.incident.country == country and plan.incident.active(when)
        visits = plan.events_per_s / 5 * _share(country) * seasonal_factor(market, when) * 5 * AD_SHARE
        found = []
        for channel, share, cpc in CAMPAIGN_CHANNELS:
            clicks = poisson(rng, visits * share)
            orders = 0 if failing else _binomial(rng, clicks, 0.25)
            spend = Decimal(round(sum(cpc * rng.uniform(0.6, 1.4) for _ in range(clicks)), 4))
            found.append([when, country, "campaign", campaign_id(country, channel), orders, _revenue(rng, orders),
                          clicks, spend])
        return found

    return _every(plan, start, end, timedelta(seconds=5), 9, rows_of)


def _refund_rows(plan: DemoPlan, start: datetime, end: datetime) -> list[list[Any]]:
    """Each country's refunds by reason every 10 seconds (segment_metrics_1s, dimension 'refund reason')."""
    def rows_of(rng: random.Random, when: datetime, country: str, market: Market) -> list[list[Any]]:
        visits = plan.events_per_s / 5 * _share(country) * seasonal_factor(market, when) * 10 * REFUND_SHARE
        counted = [(reason, poisson(rng, visits * share)) for reason, share in REFUND_REASONS]
        return [[when, country, "refund reason", reason, refunds, _revenue(rng, refunds)]
                for reason, refunds in counted if refunds]

    return _every(plan, start, end, timedelta(seconds=10), 10, rows_of)


def _late_rows(plan: DemoPlan, start: datetime, end: datetime) -> list[list[Any]]:
    rng = random.Random(plan.seed + 4)
    countries = list(MARKETS)
    return [[start + (end - start) * rng.random(), rng.choice(countries), rng.choice(["product_view", "add_to_cart"]),
             rng.randint(4_000, 900_000), 0, offset] for offset in range(400)]


def _dead_letter_rows(plan: DemoPlan, start: datetime, end: datetime) -> list[list[Any]]:
    rng = random.Random(plan.seed + 5)
    reasons = ["malformed_json", "schema_violation", "unknown_currency", "timestamp_out_of_range"]
    return [[start + (end - start) * rng.random(), rng.choice(reasons), "demo", rng.randint(80, 900),
             f"{rng.getrandbits(256):064x}", 0, offset] for offset in range(300)]


def _band_rows(plan: DemoPlan, start: datetime, end: datetime) -> list[list[Any]]:
    """The sidecar's seasonal expectation of orders/s per country each minute, and a 30-minute forecast cone."""
    rows: list[list[Any]] = []
    when = start.replace(second=0)
    fitted = end - timedelta(minutes=20)
    while when < end + timedelta(minutes=30):
        for country, market in MARKETS.items():
            expected = plan.events_per_s * _share(country) * seasonal_factor(market, when) * 0.55 * 0.25 * 0.5 * 0.9
            kind = "seasonal" if when < end else "forecast"
            width = 0.35 if kind == "seasonal" else 0.35 + 0.02 * (when - end).total_seconds() / 60
            rows.append([when, country, "orders_per_s", kind, expected, expected * (1 - width),
                         expected * (1 + width), fitted])
        when += timedelta(minutes=1)
    return rows


def _baseline_rows(plan: DemoPlan) -> list[list[Any]]:
    rows: list[list[Any]] = []
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    for country, market in MARKETS.items():
        for hour in range(168):
            mean = plan.events_per_s * _share(country) * seasonal_factor(market, monday + timedelta(hours=hour)) * 0.06
            rows.append([country, "orders_per_s", hour, mean, mean * 0.15, 4, plan.now])
    return rows


def _incident_outputs(plan: DemoPlan) -> tuple[list[list[Any]], list[list[Any]]]:
    incident = plan.incident
    opened = incident.start + timedelta(seconds=40)
    closed = incident.end + timedelta(seconds=50)
    outage = uuid.UUID(int=plan.seed)
    still_open = uuid.UUID(int=plan.seed + 1)
    orders_drop = uuid.UUID(int=plan.seed + 2)
    recent = plan.now - timedelta(minutes=6)
    anomalies = [
        [outage, "payment_failure_rate", incident.country, opened, closed, "critical", 0.93, 0.03, 0.0, 0.08, 0.99,
         ["ewma", "hst", "seasonal"], closed],
        [orders_drop, "orders_per_s", incident.country, opened + timedelta(seconds=5), closed, "high",
         0.1, 2.4, 1.6, 3.2, 0.95, ["ewma", "seasonal"], closed],
        [still_open, "carts_without_order", "BR", recent, None, "medium", 0.82, 0.7, 0.62, 0.78, 0.71, ["ewma"],
         recent],
    ]
    text = (f"Payment failures in {incident.country} jumped to 93% (normally 3%) at "
            f"{opened:%H:%M} UTC; orders there fell 96%. Other countries are normal: a local payment problem, "
            "most likely the adyen or klarna gateway.")
    insights = [
        [opened + timedelta(seconds=2), uuid.UUID(int=plan.seed + 10), outage, "payment_failure_rate",
         incident.country, "critical", text, "template", "{}"],
        [recent + timedelta(seconds=2), uuid.UUID(int=plan.seed + 11), still_open, "carts_without_order", "BR",
         "medium", "Carts without an order in BR are 82% against 70% usual for this hour; no other signal moved "
         "with it.", "template", "{}"],
    ]
    return anomalies, insights


def _incident_rows(plan: DemoPlan) -> list[list[Any]]:
    """The sidecar's incidents for the demo's regions: the DE outage (resolved) and BR's abandonment (open)."""
    incident = plan.incident
    opened, closed = incident.start + timedelta(seconds=40), incident.end + timedelta(seconds=50)
    resolved = closed + timedelta(minutes=3)
    # the payments that failed: views x cart x checkout x attempt rates, 90 points more failing, at 65 each
    failed_per_s = plan.events_per_s * _share(incident.country) * 0.55 * 0.25 * 0.5 * 0.9 * 0.9
    at_risk = round(failed_per_s * 65 * (incident.end - incident.start).total_seconds(), 2)
    recent = plan.now - timedelta(minutes=6)
    outage_story = (f"Payment failures in {incident.country} since {opened:%H:%M} UTC (resolved at {resolved:%H:%M} "
                    "UTC, critical): payment failure rate DE +3000 %; orders/s DE -96 %. "
                    f"Revenue at risk so far: ${at_risk:,.0f}.")
    br_story = (f"Cart abandonment surge in BR since {recent:%H:%M} UTC (ongoing, medium): carts without an order "
                "BR +17 %. Revenue at risk so far: $0.")
    outage_ids = [uuid.UUID(int=plan.seed), uuid.UUID(int=plan.seed + 2)]
    return [
        [uuid.UUID(int=plan.seed + 20), "payment_failures", [incident.country],
         ["orders_per_s", "payment_failure_rate"], outage_ids, opened, resolved, "critical", at_risk,
         outage_story, resolved, opened + timedelta(seconds=3), resolved,
         ["gateway adyen: 93 % of the extra failures (failure rate 93 % against 3 %)"]],
        [uuid.UUID(int=plan.seed + 21), "cart_abandonment", ["BR"], ["carts_without_order"],
         [uuid.UUID(int=plan.seed + 1)], recent, None, "medium", 0.0, br_story, plan.now,
         recent + timedelta(seconds=3), plan.now, []],
    ]


def action_rows(plan: DemoPlan) -> list[list[Any]]:
    """The payment failover for the demo's outage, as the actions processor records it: proposed two
    minutes in, asked in Slack, approved, executed, rolled back when the incident resolved."""
    incident = plan.incident
    opened, resolved = incident.start + timedelta(seconds=40), incident.end + timedelta(seconds=50 + 180)
    gateway = "adyen"
    action, about = uuid.UUID(int=plan.seed + 30), uuid.UUID(int=plan.seed + 20)
    call = json.dumps({"http": {"method": "POST", "path": "/admin/payments/failover", "body": {
        "country": incident.country, "from_gateway": gateway, "reason": f"shoppulse incident {about}"}}},
        sort_keys=True)
    undo = json.dumps({"http": {"method": "POST", "path": "/admin/payments/failback", "body": {
        "country": incident.country, "gateway": gateway}}}, sort_keys=True)
    steps = [
        (opened + timedelta(minutes=2), "proposed", "shoppulse",
         f"payment_failures in {incident.country}, critical; gateway {gateway} carries 93 % of the extra failures", ""),
        (opened + timedelta(minutes=2), "approval_requested", "shoppulse", "asked in Slack (C0APPROVALS)",
         '{"channel": "C0APPROVALS", "ts": "1800000001.000100"}'),
        (opened + timedelta(minutes=3), "approved", "slack:U0ONCALL", "approved via slack, as S0PAYMENTS", ""),
        (opened + timedelta(minutes=3, seconds=5), "executed", "shoppulse", "", '{"status": 200}'),
        (resolved, "rolled_back", "shoppulse", "rolled back: the incident resolved", '{"status": 200}'),
    ]
    return [[at, action, "payment-failover", about, incident.country, step, "live", actor, detail, call, undo, response]
            for at, step, actor, detail, response in steps]


def _llm_rows(plan: DemoPlan) -> list[list[Any]]:
    rng = random.Random(plan.seed + 6)
    rows: list[list[Any]] = []
    for _ in range(600):
        when = plan.now - timedelta(days=3) * rng.random()
        model = rng.choice(["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"])
        cached = int(rng.random() < 0.3)
        error = "" if rng.random() > 0.04 else rng.choice(["timeout", "rate_limited"])
        prompt, completion = rng.randint(300, 900), rng.randint(60, 180)
        price = (0.15, 0.6) if model == "gpt-4o-mini" else (2.5, 10.0)
        cost = Decimal(0) if cached or error else Decimal(
            (prompt * price[0] + completion * price[1]) / 1e6).quantize(Decimal("0.000001"))
        rows.append([when, uuid.UUID(int=rng.getrandbits(128)), None, model, prompt, completion, cost,
                     5 if cached else int(rng.lognormvariate(math.log(1400), 0.4)), cached, error])
    return rows


def _heartbeats(now: datetime) -> list[list[Any]]:
    components = ["kafka", "clickhouse", "prometheus", "ingest", "aggregate", "loadgen"]
    return [[now - timedelta(seconds=5 * i), c, "up", "127.0.0.1", 1000 + n, ""]
            for i in range(60) for n, c in enumerate(components)]
