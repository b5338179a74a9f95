"""Which countries drive a store-wide move: put back at their usual, the store is near its usual again.

A store-wide series is its countries added up: a rate is their sum, a ratio their trials-weighted
mean. When one country's incident shifts the store's mix (a flash sale in the US brings a wave of
browsers who buy less than the store's average shopper), the store's conversion drops though no
country's own conversion did. The test is the counterfactual: the store again with the suspects'
countries at their usual value and their usual number of trials (every other country as it is
now) has moved less than ``EXPLAINED_SHARE`` of the store's relative move — so the suspects account
for the rest of it. Quantiles (a p95 of the merged histograms) do not add up this way and are never
attributed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shoppulse.sidecar.detectors import Point

EXPLAINED_SHARE = 0.5


@dataclass(frozen=True)
class Usual:
    """A country's usual value of a series and its usual evidence (events or trials) per window."""

    value: float
    count: float


def _combined(kind: str, points: Iterable[tuple[float, float]]) -> float | None:
    """The store's value from its countries' (value, count): a rate's sum, a ratio's weighted mean."""
    pairs = list(points)
    if kind == "rate":
        return sum(value for value, _ in pairs)
    trials = sum(count for _, count in pairs)
    return sum(value * count for value, count in pairs) / trials if trials > 0 else None


def drive(store: Point, store_expected: float, by_country: Mapping[str, Point], usual: Mapping[str, Usual],
          suspects: Iterable[str]) -> bool:
    """Whether ``suspects`` drive the store-wide move of a series (``store`` against ``store_expected``):
    with each suspect at its usual value and count (and every other country at its point) the store
    would have moved less than EXPLAINED_SHARE as much. A suspect with no usual yet explains nothing."""
    if store.kind not in ("rate", "ratio") or not store_expected:
        return False
    store_move = abs(store.value / store_expected - 1)
    left_out = {c for c in suspects if c in by_country and c in usual}
    if not left_out or store_move == 0:
        return False
    counterfactual = _combined(store.kind, [(usual[c].value, usual[c].count) if c in left_out
                                            else (point.value, point.count)
                                            for c, point in sorted(by_country.items()) if point.kind == store.kind])
    if counterfactual is None:
        return False
    return abs(counterfactual / store_expected - 1) < EXPLAINED_SHARE * store_move
