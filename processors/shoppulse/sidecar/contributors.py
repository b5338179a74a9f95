"""What drives an incident, ranked: the payment gateways and failure reasons behind failures, the
gateways behind slow payments, and the devices and product categories behind any incident of the
funnel.

The aggregation keeps payments per country, gateway and second (``payment_latency_1s``: attempts,
failures by reason and a latency histogram), so for an incident about payments each gateway of its
countries, and each failure reason, is compared between the incident and the hour before it began.
Failures: a gateway's (a reason's) extra failures are those above its own rate of failures before;
its share is of all gateways' (reasons') extra failures. Latency: a gateway's p95 during against
before; its share is of the payments slower than the p95 of before. Gateways and reasons are ranked
together by share (a gateway first on a tie): one gateway down leads with that gateway, every
gateway failing alike with the reason they fail for. The first is the top contributor the story names.

Segments (``segment_metrics_1s``: the funnel per country, second, device, product category, ad campaign and
refund reason):
each kind of incident has a measure of what it lacks or has too much of (``SEGMENT_MEASURES``: the
orders a conversion drop misses, the extra product views of a traffic surge…), taken per segment
against the segment's own rate in the hour before. A segment is named only when it stands out: its
share of the excess at least ``OVER_REPRESENTED`` times its usual share of the volume (half the way to all of
it for a segment that is usually most of it: ``stands_out_from``) (an incident that
hits every device alike names none; a broken mobile checkout names mobile; a flood of paid clicks names
its campaign; a wave of chargebacks names the reason "unauthorized").
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from clickhouse_connect.driver.client import Client

from shoppulse.events.histogram import quantile

BEFORE = timedelta(hours=1)
MIN_ATTEMPTS = 5  # fewer payments during the incident say nothing about a gateway
KINDS = ("payment_failures", "checkout_latency")
# kind -> (what is counted, what it is counted per: None for per second, +1 too much / -1 too little, the excess
# in words). The excess of a segment is sign * (counted during - its usual rate * per during).
SEGMENT_MEASURES: dict[str, tuple[str, str | None, int, str]] = {
    "payment_failures": ("payment_failures", "payment_attempts", 1, "extra failed payments"),
    "traffic_surge": ("product_views", None, 1, "extra product views"),
    "traffic_drop": ("product_views", None, -1, "missing product views"),
    "sales_surge": ("orders", None, 1, "extra orders"),
    "sales_drop": ("orders", None, -1, "missing orders"),
    "conversion_drop": ("orders", "product_views", -1, "missing orders"),
    "checkout_drop": ("checkouts", "cart_adds", -1, "missing checkouts"),
    "cart_abandonment": ("orders", "cart_adds", -1, "missing orders from carts"),
    "campaign_spend_without_orders": ("ad_clicks", None, 1, "extra paid clicks"),
    "refund_surge": ("refunds", None, 1, "extra refunds"),
}
VOLUME_NAMES = {"product_views": "product views", "cart_adds": "cart adds", "payment_attempts": "payments",
                "orders": "orders", "ad_clicks": "paid clicks", "refunds": "refunds"}
OVER_REPRESENTED = 1.5  # a segment's share of the excess against its usual share of the volume
MIN_SHARE = 0.25  # of the excess, for a segment to be named
MIN_EXCESS = 5.0  # events: a smaller excess says nothing about which segment it came from
# Named first on equal shares: the most specific place to act on.
DIMENSION_ORDER = {"gateway": 0, "campaign": 1, "refund reason": 2, "device": 3, "category": 4, "failure reason": 5}


@dataclass(frozen=True)
class Contributor:
    dimension: str
    value: str
    share: float  # of the incident's excess (extra failures, or slow payments), 0-1
    during: float  # the gateway's failure rate (a reason's share of payments) or p95 (ms) during the incident
    before: float  # the same in the hour before
    usual_share: float | None = None  # a segment's share of the volume (VOLUME_NAMES) in the hour before

    def describe(self, kind: str) -> str:
        if self.usual_share is not None:
            counted, per, _sign, excess = SEGMENT_MEASURES[kind]
            volume = VOLUME_NAMES[per or counted]
            return (f"{self.dimension} {self.value}: {100 * self.share:.0f} % of the {excess} "
                    f"({100 * self.usual_share:.0f} % of the {volume} before)")
        if kind == "payment_failures":
            during, before = f"{100 * self.during:.0f} %", f"{100 * self.before:.0f} %"
            what = (f"failure rate {during} against {before}" if self.dimension == "gateway"
                    else f"{during} of payments against {before}")
            return f"{self.dimension} {self.value}: {100 * self.share:.0f} % of the extra failures ({what})"
        what = f"p95 {self.during:,.0f} ms against {self.before:,.0f} ms"
        return f"{self.dimension} {self.value}: {100 * self.share:.0f} % of the slow payments ({what})"


@dataclass
class _Gateway:
    attempts: int = 0
    failures: int = 0
    histogram: dict[int, int] | None = None
    reasons: dict[str, int] | None = None


def _read(client: Client, countries: list[str], start: datetime, end: datetime) -> dict[str, _Gateway]:
    """Each gateway's payments in ``countries`` (every country for the store-wide ``ALL``)."""
    found: dict[str, _Gateway] = defaultdict(_Gateway)
    where = "" if "ALL" in countries else "country IN {countries:Array(String)} AND "
    for gateway, attempts, failures, (keys, counts), (reasons, reason_counts) in client.query(
            "SELECT gateway, sum(attempts), sum(failures), sumMap(bucket_keys, bucket_counts), "
            f"sumMap(failure_reasons, reason_counts) FROM payment_latency_1s WHERE {where}"
            "ts >= {start:DateTime} AND ts < {end:DateTime} GROUP BY gateway",
            parameters={"countries": countries, "start": start.replace(tzinfo=None),
                        "end": end.replace(tzinfo=None)}).result_rows:
        found[str(gateway)] = _Gateway(int(attempts), int(failures),
                                       {int(k): int(c) for k, c in zip(keys, counts, strict=True)},
                                       {str(r): int(c) for r, c in zip(reasons, reason_counts, strict=True)})
    return found


def _extra_failures(during: dict[str, tuple[int, int]], before: dict[str, tuple[int, int]],
                    dimension: str) -> list[Contributor]:
    """Each value's failures above its own rate before (``value -> (failures, attempts)``; a value
    unseen before had none), as its share of all values' extra failures."""
    extra = {}
    for value, (failed, tried) in during.items():
        failed_before, tried_before = before.get(value, (0, 0))
        usual = failed_before / tried_before if tried_before else 0.0
        extra[value] = (max(0.0, failed - usual * tried), failed / tried if tried else 0.0, usual)
    total = sum(e for e, _, _ in extra.values())
    return [Contributor(dimension, value, e / total, rate, usual) for value, (e, rate, usual) in extra.items()
            if total > 0 and e > 0]


def _by_reason(gateways: dict[str, _Gateway]) -> dict[str, tuple[int, int]]:
    """Failures by reason over every gateway, each against all the payments tried."""
    attempts = sum(g.attempts for g in gateways.values())
    failed: dict[str, int] = defaultdict(int)
    for gateway in gateways.values():
        for reason, count in (gateway.reasons or {}).items():
            failed[reason] += count
    return {reason: (count, attempts) for reason, count in failed.items()}


def payment_contributors(client: Client, kind: str, countries: list[str], start: datetime,
                         end: datetime) -> list[Contributor]:
    """The gateways of ``countries`` (and for failures the failure reasons) ranked by their part in a
    payments incident from ``start`` to ``end``; empty for other kinds or when nothing stands out."""
    if kind not in KINDS or end <= start:
        return []
    during, before = _read(client, countries, start, end), _read(client, countries, start - BEFORE, start)
    ranked: list[Contributor] = []
    if kind == "payment_failures":
        tried = {g: (now.failures, now.attempts) for g, now in during.items() if now.attempts >= MIN_ATTEMPTS}
        ranked = _extra_failures(tried, {g: (then.failures, then.attempts) for g, then in before.items()}, "gateway")
        if sum(now.attempts for now in during.values()) >= MIN_ATTEMPTS:
            ranked += _extra_failures(_by_reason(during), _by_reason(before), "failure reason")
    else:
        everything_before: dict[int, int] = defaultdict(int)
        for then in before.values():
            for key, count in (then.histogram or {}).items():
                everything_before[key] += count
        if not everything_before:
            return []
        slow_from = max(k for k in everything_before
                        if sum(c for j, c in everything_before.items() if j >= k) >= 0.05 * sum(
                            everything_before.values()))
        slow = {g: sum(c for k, c in (now.histogram or {}).items() if k > slow_from)
                for g, now in during.items() if now.attempts >= MIN_ATTEMPTS}
        total = sum(slow.values())
        for gateway, count in slow.items():
            prior = before.get(gateway)
            if total and count and prior is not None and prior.histogram:
                ranked.append(Contributor("gateway", gateway, count / total,
                                          quantile(during[gateway].histogram or {}, 0.95),
                                          quantile(prior.histogram, 0.95)))
    return sorted(ranked, key=_rank)


def _rank(contributor: Contributor) -> tuple[float, int, str]:
    return -contributor.share, DIMENSION_ORDER[contributor.dimension], contributor.value


def _read_segments(client: Client, countries: list[str], start: datetime, end: datetime,
                   columns: tuple[str, ...]) -> dict[tuple[str, str], tuple[int, ...]]:
    """Each segment's sums of ``columns`` in ``countries`` (every country for the store-wide ``ALL``)."""
    where = "" if "ALL" in countries else "country IN {countries:Array(String)} AND "
    sums = ", ".join(f"sum({column})" for column in columns)
    return {(str(dimension), str(segment)): tuple(int(v) for v in values)
            for dimension, segment, *values in client.query(
                f"SELECT dimension, segment, {sums} FROM segment_metrics_1s WHERE {where}"
                "ts >= {start:DateTime} AND ts < {end:DateTime} GROUP BY dimension, segment",
                parameters={"countries": countries, "start": start.replace(tzinfo=None),
                            "end": end.replace(tzinfo=None)}).result_rows}


def stands_out_from(usual_share: float) -> float:
    """The share of an incident's excess a segment must carry to be named: ``OVER_REPRESENTED`` times its usual
    share of the volume, or for a segment that is usually most of it (a campaign with two thirds of the paid
    clicks), half the way from its usual share to all of it — 1.5 times two thirds would be out of reach."""
    return min(OVER_REPRESENTED * usual_share, (1 + usual_share) / 2)


def segment_contributors(client: Client, kind: str, countries: list[str], start: datetime,
                         end: datetime) -> list[Contributor]:
    """The devices and product categories that stand out in the incident's excess (``SEGMENT_MEASURES``),
    ranked by their share of it; empty for a kind without a measure or when no segment stands out."""
    if kind not in SEGMENT_MEASURES or end <= start:
        return []
    counted, per, sign, _ = SEGMENT_MEASURES[kind]
    columns = (counted,) if per is None else (counted, per)
    during, before = _read_segments(client, countries, start, end, columns), _read_segments(
        client, countries, start - BEFORE, start, columns)
    seconds, seconds_before = (end - start).total_seconds(), BEFORE.total_seconds()
    found: list[Contributor] = []
    for dimension in sorted({d for d, _ in during}):
        excess: dict[str, tuple[float, float, float]] = {}
        volume_before = {segment: values[-1] for (d, segment), values in before.items() if d == dimension}
        for (d, segment), values in during.items():
            then = before.get((d, segment))
            if d != dimension or then is None or then[-1] == 0:
                continue  # a segment new since the hour before has no usual rate to fall short of
            usual = then[0] / (seconds_before if per is None else then[1])
            volume = seconds if per is None else values[1]
            rate_during = values[0] / (seconds if per is None else max(values[1], 1))
            excess[segment] = (sign * (values[0] - usual * volume), rate_during, usual)
        total = sum(e for e, _, _ in excess.values() if e > 0)
        all_volume = sum(volume_before.values())
        if total < MIN_EXCESS or not all_volume:
            continue
        for segment, (e, rate_during, usual) in excess.items():
            share, usual_share = e / total, volume_before[segment] / all_volume
            if share >= MIN_SHARE and share >= stands_out_from(usual_share):
                found.append(Contributor(dimension, segment, share, rate_during, usual, usual_share))
    return sorted(found, key=_rank)


def incident_contributors(client: Client, kind: str, countries: list[str], start: datetime,
                          end: datetime) -> list[Contributor]:
    """Everything that drives the incident, ranked: gateways and reasons for payments, segments that stand out."""
    return sorted(payment_contributors(client, kind, countries, start, end)
                  + segment_contributors(client, kind, countries, start, end), key=_rank)
