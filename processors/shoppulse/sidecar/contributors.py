"""What drives an incident, ranked: the payment gateways behind failures or slow payments.

The aggregation keeps payments per country, gateway and second (``payment_latency_1s``: attempts,
failures and a latency histogram), so for an incident about payments each gateway of its countries
is compared between the incident and the hour before it began. Failures: a gateway's extra
failures are those above its own failure rate before; its share is of all gateways' extra
failures. Latency: a gateway's p95 during against before; its share is of the payments slower
than the p95 of before. The first is the top contributor the story names.
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
    during: float  # the gateway's failure rate or p95 (ms) during the incident
    before: float  # the same in the hour before

    def describe(self, kind: str) -> str:
        if kind == "payment_failures":
            what = f"failure rate {100 * self.during:.0f} % against {100 * self.before:.0f} %"
            return f"{self.dimension} {self.value}: {100 * self.share:.0f} % of the extra failures ({what})"
        what = f"p95 {self.during:,.0f} ms against {self.before:,.0f} ms"
        return f"{self.dimension} {self.value}: {100 * self.share:.0f} % of the slow payments ({what})"


@dataclass
class _Gateway:
    attempts: int = 0
    failures: int = 0
    histogram: dict[int, int] | None = None


def _read(client: Client, countries: list[str], start: datetime, end: datetime) -> dict[str, _Gateway]:
    """Each gateway's payments in ``countries`` (every country for the store-wide ``ALL``)."""
    found: dict[str, _Gateway] = defaultdict(_Gateway)
    where = "" if "ALL" in countries else "country IN {countries:Array(String)} AND "
    for gateway, attempts, failures, (keys, counts) in client.query(
            "SELECT gateway, sum(attempts), sum(failures), sumMap(bucket_keys, bucket_counts) "
            f"FROM payment_latency_1s WHERE {where}"
            "ts >= {start:DateTime} AND ts < {end:DateTime} GROUP BY gateway",
            parameters={"countries": countries, "start": start.replace(tzinfo=None),
                        "end": end.replace(tzinfo=None)}).result_rows:
        found[str(gateway)] = _Gateway(int(attempts), int(failures),
                                       {int(k): int(c) for k, c in zip(keys, counts, strict=True)})
    return found


def payment_gateways(client: Client, kind: str, countries: list[str], start: datetime,
                     end: datetime) -> list[Contributor]:
    """The gateways of ``countries`` ranked by their part in a payments incident from ``start`` to
    ``end``; empty for other kinds or when nothing stands out."""
    if kind not in KINDS or end <= start:
        return []
    during, before = _read(client, countries, start, end), _read(client, countries, start - BEFORE, start)
    ranked: list[Contributor] = []
    if kind == "payment_failures":
        extra = {}
        for gateway, now in during.items():
            if now.attempts < MIN_ATTEMPTS:
                continue
            then = before.get(gateway, _Gateway())
            usual = then.failures / then.attempts if then.attempts else 0.0
            extra[gateway] = (max(0.0, now.failures - usual * now.attempts), now.failures / now.attempts, usual)
        total = sum(e for e, _, _ in extra.values())
        ranked = [Contributor("gateway", g, e / total, rate, usual) for g, (e, rate, usual) in extra.items()
                  if total > 0 and e > 0]
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
    return sorted(ranked, key=lambda c: (-c.share, c.value))
