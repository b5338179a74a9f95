"""Root-cause hints and plain-English insights for an anomaly region.

When a region opens, the same country's other signals and the same signal in the other countries
are examined: those that moved too (|z| >= ``MOVED_Z`` now, and correlated over the recent
window) are named, and the anomaly is called systemic when the signal moved in at least
``SYSTEMIC_SHARE`` of the other countries, local otherwise. The insight is built from a structured
payload holding aggregate numbers only (never an event, a user or a session).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import cast

MOVED_Z = 3.0
SYSTEMIC_SHARE = 0.4

LABELS = {
    "orders_per_s": ("orders/s", "{:.2f}"),
    "revenue_per_s": ("revenue", "${:,.2f}/s"),
    "views_per_s": ("product views/s", "{:,.1f}"),
    "orders_per_view": ("orders per product view", "{:.1%}"),
    "carts_without_order": ("carts without an order", "{:.0%}"),
    "checkouts_per_cart": ("carts reaching checkout", "{:.0%}"),
    "payment_failure_rate": ("payment failure rate", "{:.0%}"),
    "payment_latency_p95": ("payment latency p95", "{:,.0f} ms"),
    "ad_spend_per_s": ("ad spend", "${:,.3f}/s"),
    "orders_per_ad_click": ("orders per paid click", "{:.1%}"),
    "refunds_per_s": ("refunds/s", "{:.2f}"),
}


@dataclass(frozen=True)
class Signal:
    metric: str
    country: str
    z: float
    delta_pct: float
    correlation: float


@dataclass(frozen=True)
class InsightPayload:
    metric: str
    country: str
    observed: float
    baseline: float
    delta_pct: float
    window: str
    scope: str  # local | systemic
    correlated_signals: list[dict[str, object]] = field(default_factory=list)
    # The incident the region leads: its kind, the other regions grouped with it (metric, country,
    # delta_pct) and its ranked contributors ("gateway pix: 91 % of the extra failures ...").
    incident: str = ""
    incident_regions: list[dict[str, object]] = field(default_factory=list)
    contributors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson correlation of the common tail of two series (0 when undefined)."""
    n = min(len(a), len(b))
    if n < 3:
        return 0.0
    xs, ys = list(a)[-n:], list(b)[-n:]
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    return sxy / (sx * sy) if sx and sy else 0.0


def scope_of(metric: str, country: str, z: float, others: list[Signal]) -> str:
    """systemic when the same metric moved the same way in enough other countries."""
    if country == "ALL":
        return "systemic"
    peers = [s for s in others if s.metric == metric and s.country not in (country, "ALL")]
    moved = [s for s in peers if abs(s.z) >= MOVED_Z and math.copysign(1, s.z) == math.copysign(1, z)]
    return "systemic" if peers and len(moved) / len(peers) >= SYSTEMIC_SHARE else "local"


def _value(metric: str, value: float) -> str:
    fmt = LABELS.get(metric, (metric, "{:.3g}"))[1]
    return fmt.format(value)


def region_text(metric: str, country: str, observed: float, expected: float, live: bool) -> str:
    """What an anomaly region's annotation says when no insight tells it (one region of an incident whose
    insight is its lead's): the move in numbers, and whether the live seconds showed it first."""
    label = LABELS.get(metric, (metric, ""))[0]
    where = "the whole store" if country == "ALL" else country
    direction = "rose" if observed >= expected else "fell"
    change = f", {100 * (observed - expected) / expected:+.0f}%" if expected else ""
    text = (f"{label[:1].upper()}{label[1:]} in {where} {direction} to {_value(metric, observed)} "
            f"(expected {_value(metric, expected)}{change}).")
    if live:
        text += " Seen first in the live seconds: kept once the final windows confirm it, withdrawn if they do not."
    return text


def template_insight(payload: InsightPayload, opened_at: datetime) -> str:
    """A clear, specific sentence or three for the ops wall, from aggregate numbers only."""
    label = LABELS.get(payload.metric, (payload.metric, ""))[0]
    where = "the whole store" if payload.country == "ALL" else payload.country
    direction = "rose" if payload.delta_pct >= 0 else "fell"
    text = (f"{label.capitalize()} in {where} {direction} to {_value(payload.metric, payload.observed)} "
            f"(expected {_value(payload.metric, payload.baseline)}, {payload.delta_pct:+.0f}%) "
            f"at {opened_at:%H:%M} UTC over the last {payload.window}.")
    same_country = [s for s in payload.correlated_signals if s["country"] == payload.country]
    if same_country:
        moved = ", ".join(f"{LABELS.get(str(s['metric']), (s['metric'],))[0]} {cast(float, s['delta_pct']):+.0f}%"
                          for s in same_country[:3])
        text += f" Moving with it in {where}: {moved}."
    if payload.country != "ALL":
        if payload.scope == "local":
            text += f" Other countries look normal: a problem local to {payload.country}."
        else:
            peers = sorted({str(s["country"]) for s in payload.correlated_signals
                            if s["metric"] == payload.metric and s["country"] != payload.country})
            text += f" The same is happening in {', '.join(peers[:5]) or 'other countries'}: a store-wide problem."
    if payload.incident_regions:
        grouped = ", ".join(f"{LABELS.get(str(r['metric']), (r['metric'],))[0]} "
                            f"{'store-wide' if r['country'] == 'ALL' else r['country']} "
                            f"{cast(float, r['delta_pct']):+.0f}%" for r in payload.incident_regions[:4])
        text += f" One incident with: {grouped}."
    if payload.contributors:
        text += f" Top contributor: {payload.contributors[0]}."
    return text
