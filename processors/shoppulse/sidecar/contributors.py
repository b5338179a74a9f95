"""What drives an incident, ranked: the payment gateways and failure reasons behind failures, the
gateways behind slow payments.

The aggregation keeps payments per country, gateway and second (``payment_latency_1s``: attempts,
failures by reason and a latency histogram), so for an incident about payments each gateway of its
countries, and each failure reason, is compared between the incident and the hour before it began.
Failures: a gateway's (a reason's) extra failures are those above its own rate of failures before;
its share is of all gateways' (reasons') extra failures. Latency: a gateway's p95 during against
before; its share is of the payments slower than the p95 of before. Gateways and reasons are ranked
together by share (a gateway first on a tie): one gateway down leads with that gateway, every
gateway failing alike with the reason they fail for. The first is the top contributor the story names.
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


@dataclass(frozen=True)
class Contributor:
    dimension: str
    value: str
    share: float  # of the incident's excess (extra failures, or slow payments), 0-1
    during: float  # the gateway's failure rate (a reason's share of payments) or p95 (ms) during the incident
    before: float  # the same in the hour before

    def describe(self, kind: str) -> str:
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
    return sorted(ranked, key=lambda c: (-c.share, c.dimension != "gateway", c.value))
