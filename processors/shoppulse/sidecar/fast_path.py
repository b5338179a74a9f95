"""The fast path: provisional anomaly regions from the live per-second sums, seconds after the events.

The final path scores 10 s steps of 60 s windows once they are final (after the aggregation's grace
period): 10 to 20 s from an event to a region. Ingestion writes every event's counts to ``metrics_live``
about a second after the shop sent it, so a strong step change — a gateway failing every payment, orders
stopping, traffic surging — is visible there first. At every look (each poll of the sidecar) the fast
path judges, for each of ``FAST_METRICS`` in each country and in the whole store (unless a country's
region of the metric, open or provisional, explains it), the last 1 to ``FAST_WINDOW_S`` live seconds
(``strongest`` says which) against the series' baseline, as the final path's detectors learned it
(during a known event with a level, beyond that level; without one, not at all): a rate by its events'
tail as counts that vary as the series' do over a few live seconds (``live_dispersion.py``), a ratio
by its trials' exact tail shrunk by the overdispersion, never beyond its learned spread widened to the
shorter window (the square root of the windows' ratio). The longest stretch is not always the
strongest: a change that began two seconds ago is diluted by the three usual seconds before it. A
second in which no country sent anything is a gap of the feed, not every shop going silent at once:
it is left out.

A region opens, provisional, when ``LOOKS_TO_OPEN`` looks in a row, each with a newer second, find
|z| of at least the series' sensitivity and ``FAST_OPEN_Z``, with a change of ``FAST_MIN_CHANGE_PCT``
or more; it is written (and annotated in Grafana) at once. When the final path opens a region on the
same series it takes the provisional region's id and start: one region, one annotation. When
``CONFIRM_WITHIN`` of final steps pass without one it is withdrawn: its row says so (dashboards and
rules leave it out) and its annotation is deleted.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shoppulse.sidecar.counting import overdispersed_poisson_z
from shoppulse.sidecar.detectors import USUAL, Point, Range, RobustZ, as_likelihood, counting_floored, level_factor
from shoppulse.sidecar.live_dispersion import LiveDispersion, prior_ratio
from shoppulse.sidecar.regions import Region, RegionTracker, region_id
from shoppulse.sidecar.signals import GLOBAL, Totals, points

FAST_METRICS = ("payment_failure_rate", "orders_per_s", "views_per_s")
RATIOS = frozenset({"payment_failure_rate"})
FAST_WINDOW_S = 5  # the most live seconds judged together
FAST_OPEN_Z = 5.5
FAST_MIN_CHANGE_PCT = 30.0
LOOKS_TO_OPEN = 2  # strong looks in a row, each with a newer second: one bursty second opens nothing
CONFIRM_WITHIN = timedelta(seconds=90)  # of final steps after a provisional region opened
# (metric, country) -> its baseline, its tracker and the multiples of the usual a known event may take it to
JudgedSeries = Mapping[tuple[str, str], tuple[RobustZ, RegionTracker, Range]]


def judged_live(metric: str, country: str) -> bool:
    """Whether the fast path judges this series: its metrics, in each country and in the whole store."""
    return metric in FAST_METRICS


def with_store(seconds: Mapping[str, Mapping[datetime, Totals]]) -> dict[str, Mapping[datetime, Totals]]:
    """Country -> second -> totals, with the whole store's (GLOBAL) sums of each second beside them."""
    store: dict[datetime, Totals] = {}
    for by_second in seconds.values():
        for second, totals in by_second.items():
            store[second] = store.get(second, Totals()) + totals
    return {**seconds, GLOBAL: store}


def live_z(point: Point, baseline: RobustZ, series_window_s: float, ratio: float, factor: float = 1.0) -> float:
    """How unusual ``point`` (a few live seconds) is for the series. A rate (events per second): its
    events' tail as counts that vary ``ratio`` times as much as Poisson counts (the series' live
    dispersion, ``live_dispersion.py``; at a known event's ``factor`` times the usual, the level's moves
    with it) — a count's tail is skewed, so a shop going silent is as rare as it is, not as a normal
    deviate would be. A ratio: its counting z (exact binomial, shrunk by the overdispersion), never
    beyond the learned spread widened to its window (the square root of the windows' ratio)."""
    expected = baseline.expected
    widen = math.sqrt(series_window_s / point.window_s)
    spread = baseline.spread_z(point.value / factor, widen)
    if expected is None or spread is None:
        return 0.0
    if point.kind == "rate":  # orders_per_s, views_per_s: the value is the events over the window
        if expected <= 0:
            return 0.0
        return overdispersed_poisson_z(point.count, expected * factor * point.window_s, ratio * max(1.0, factor))
    counting = point.counting_z(expected, baseline.dispersion())
    return 0.0 if counting is None else counting_floored(spread, counting)


@dataclass(frozen=True)
class LiveLook:
    """The strongest stretch of live seconds for one series at one look."""

    z: float
    value: float
    expected: float
    start: datetime  # the first second of the stretch


def strongest(seconds: Mapping[datetime, Totals], fed: Collection[datetime], newest: datetime, metric: str,
              baseline: RobustZ, series_window_s: float, ratio: float, within: Range = USUAL) -> LiveLook | None:
    """The most unusual stretch of the last 1..FAST_WINDOW_S seconds up to ``newest``. The newest second
    is still filling (ingestion adds to it at every checkpoint): a ratio of its events so far is a fair
    sample and is judged with it; a count so far would look like a drop, so a rate's stretches end before it.
    ``ratio``: how many times a Poisson count's variance a rate's events vary (``live_z``). ``within``:
    the multiples of the usual a known event may take a rate to (judged beyond them only, as
    ``SeriesDetector.score_one`` judges them). ``fed``: the seconds the feed brought anything for, in any
    country; one in which no country sent anything is a gap of the feed, not a silent shop, and is left
    out of the stretch."""
    best: LiveLook | None = None
    totals, window_s = Totals(), 0
    last = newest if metric in RATIOS else newest - timedelta(seconds=1)
    for back in range(FAST_WINDOW_S):
        second = last - timedelta(seconds=back)
        if second not in fed:
            continue
        totals, window_s = totals + seconds.get(second, Totals()), window_s + 1
        point = points(totals, {}, window_s).get(metric)
        if point is None or baseline.expected is None:
            continue
        factor = level_factor(point, baseline.expected, within)
        z = live_z(point, baseline, series_window_s, ratio, factor)
        if best is None or abs(z) > abs(best.z):
            best = LiveLook(z, point.value, baseline.expected * factor, second)
    return best


@dataclass
class FastPath:
    series_window_s: float
    provisional: dict[tuple[str, str], Region] = field(default_factory=dict)
    _strong: dict[tuple[str, str], tuple[int, datetime]] = field(default_factory=dict)  # (looks, newest second)
    live: dict[tuple[str, str], LiveDispersion] = field(default_factory=dict)  # each rate's, from its live seconds
    _learned_through: datetime | None = None

    def look(self, newest: datetime, seconds: Mapping[str, Mapping[datetime, Totals]],
             series: JudgedSeries) -> list[Region]:
        """Judge the live seconds before ``newest`` (country -> second -> totals) of each series (its baseline,
        its tracker and the multiples of the usual a known event may take it to); the provisional regions
        this look opens."""
        opened = []
        seconds = with_store(seconds)
        fed = seconds[GLOBAL].keys()  # the seconds any country sent anything in
        # the store after its countries: a move one of them shows (a region open or provisional) is theirs
        for (metric, country), (baseline, tracker, within) in sorted(series.items(), key=lambda s: s[0][1] == GLOBAL):
            key = (metric, country)
            if not judged_live(metric, country) or tracker.is_open or key in self.provisional or not baseline.warm \
                    or (country == GLOBAL and self._countries_show(metric, series)):
                self._strong.pop(key, None)
                continue
            found = strongest(seconds.get(country, {}), fed, newest, metric, baseline, self.series_window_s,
                              self.ratio(key, baseline), within)
            change = 100 * abs(found.value - found.expected) / abs(found.expected) if found and found.expected \
                else 0.0
            if found is None or abs(found.z) < max(FAST_OPEN_Z, tracker.open_z) or change < FAST_MIN_CHANGE_PCT:
                self._strong.pop(key, None)
                continue
            looks, seen = self._strong.get(key, (0, newest - timedelta(seconds=1)))
            if newest > seen:  # a look at the same seconds again is no new evidence
                looks, seen = looks + 1, newest
            self._strong[key] = (looks, seen)
            if looks < LOOKS_TO_OPEN:
                continue
            del self._strong[key]
            band = abs(found.value - found.expected) / abs(found.z)
            region = Region(region_id(metric, country, found.start), metric, country, found.start, found.value,
                            found.expected, found.expected - 2 * band, found.expected + 2 * band,
                            as_likelihood(abs(found.z)), found.z, detectors=["fast_path"], onset=found.start,
                            status="provisional")
            region.peak_delta_pct, region.peak_z = region.delta_pct, abs(found.z)
            self.provisional[key] = region
            opened.append(region)
        self._learn(newest, seconds, fed, series)
        return opened

    def ratio(self, key: tuple[str, str], baseline: RobustZ) -> float:
        """How many times a Poisson count's variance the series' events vary over a few live seconds."""
        prior = prior_ratio(baseline, self.series_window_s)
        live = self.live.get(key)
        return prior if live is None else live.ratio(prior)

    def _learn(self, newest: datetime, seconds: Mapping[str, Mapping[datetime, Totals]], fed: Collection[datetime],
               series: JudgedSeries) -> None:
        """The live seconds that left every judged stretch since the last look teach each rate's live
        dispersion — not a series' with a region open or provisional, a strong look pending or a known
        event's level to be judged against (its volumes are not the usual), nor a second in which no
        country sent anything (a gap of the feed)."""
        through = newest - timedelta(seconds=FAST_WINDOW_S + 1)
        second = through if self._learned_through is None else self._learned_through + timedelta(seconds=1)
        second = max(second, min(fed, default=through))  # seconds before those read are not known here
        while second <= through:
            by_country: dict[str, dict[str, Point]] = {}  # each country's points of this second, made once
            for key, (baseline, tracker, within) in series.items():
                metric, country = key
                if metric in RATIOS or not judged_live(metric, country):
                    continue
                live = self.live.setdefault(key, LiveDispersion())
                if second not in fed or tracker.is_open or key in self.provisional or key in self._strong \
                        or within != USUAL or not baseline.warm or baseline.expected is None:
                    live.skip()
                    continue
                if country not in by_country:
                    by_country[country] = points(seconds.get(country, {}).get(second, Totals()), {}, 1)
                events = by_country[country][metric].count
                live.learn_one(second, events, baseline.expected, prior_ratio(baseline, self.series_window_s))
            second += timedelta(seconds=1)
        self._learned_through = max(through, self._learned_through or through)

    def _countries_show(self, metric: str, series: JudgedSeries) -> bool:
        """Whether a country has a region of ``metric`` open or provisional."""
        return any(m == metric and c != GLOBAL and (tracker.is_open or (m, c) in self.provisional)
                   for (m, c), (_, tracker, _) in series.items())

    def confirm(self, region: Region) -> bool:
        """A region the final path opened takes over the provisional one of its series (its id and start);
        True when there was one."""
        provisional = self.provisional.pop((region.metric, region.country), None)
        if provisional is None:
            return False
        region.anomaly_id = provisional.anomaly_id
        region.opened_at = min(region.opened_at, provisional.opened_at)
        region.onset = min(region.onset or region.opened_at, provisional.opened_at)
        region.detected_at = provisional.detected_at
        region.detectors = list(dict.fromkeys([*provisional.detectors, *region.detectors]))
        return True

    def withdraw_unconfirmed(self, final_until: datetime) -> list[Region]:
        """The provisional regions the final steps up to ``final_until`` did not confirm in time."""
        due = [k for k, r in self.provisional.items() if final_until >= r.opened_at + CONFIRM_WITHIN]
        withdrawn = []
        for key in due:
            region = self.provisional.pop(key)
            region.status, region.closed_at = "withdrawn", final_until
            withdrawn.append(region)
        return withdrawn
