"""Online detectors for one series (one metric in one country), fed one point per evaluation step.

Every detector follows River's anomaly-detector idiom on the same ``Point``: ``score_one(point)``
gives its ``Opinion`` (a calibrated score: how unusual the point is for this series, as a
probability; and whether it sees the point as unusual, as the usual, or cannot tell) without
learning, ``learn_one(point, weight)`` learns. A point carries its own context (the previous value,
the seasonal band for its time of the week where one is fitted), so detectors need nothing else.

* ``RobustZ``: an EWMA of the level and of the absolute deviation (a streaming median-like scale),
  with a floor from counting statistics — a z never larger than the exact tail of the count behind
  the point says (Poisson events for a rate, binomial trials for a ratio, ``counting.py``), a p95
  (judged by its logarithm) no further out than a sample quantile's spread — so sparse series do
  not cry wolf. It is also the series' baseline: the expected value and signed z that regions and
  insights report.
* ``HalfSpaceTreesDetector``: River's online isolation detector on the level and its change; it
  assumes features in [0, 1], so a River ``MinMaxScaler`` sits in front of it in one pipeline.
* ``SeasonalBandDetector``: the statsmodels Holt-Winters band for this time of the week (fitted in
  batches by ``seasonal.refit``, read with the point); inside it a value is the usual.
* ``LevelShiftCusum``: Page's two-sided CUSUM over the baseline's z, for a shift too small for any
  one point to stand out that lasts (a lost channel: orders at 60 % for good). Its output is a tail
  probability learned from the series' own sums, given as the z of a normal deviate as rare.
* ``ContextZ``: the point against the last few hundred usual points (a long memory), for a change
  the short-memory baseline adopts before it is over.
* ``SeasonalProfileZ``: the point against the same time on the last days (or weeks), where the
  series has that rhythm, for a value usual for the series but not for its time of day.
* ``RecordDetector``: whether the point goes beyond every usual value of the series' last week or
  so — evidence of another kind than a deviation's size, which corroborates it.
* ``SeriesDetector`` runs a list of them, combines their scores into one (the rarest opinion's tail
  probability, times the number of opinions: Bonferroni's bound, so a series judged by more detectors
  does not look rarer for it), and stops them learning while the series is anomalous, so an incident
  does not become normal.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass, field, replace
from statistics import NormalDist, median
from typing import ClassVar, Protocol

from river import anomaly, compose, preprocessing, stats, utils

from shoppulse.sidecar.counting import binomial_z, flow_ratio_z, poisson_z

WARM_UP_POINTS = 60
# Events come in sessions (several views and carts, retried payments), so counts vary more than
# independent trials would: the counting floors are widened by a factor each series learns from its own
# usual points, starting from this one, which weighs as much as DISPERSION_PRIOR_POINTS of them. The
# factor is the spread of their counting z (between 1 and MAX_DISPERSION), a root mean square with each
# z clipped at DISPERSION_CLIP factors first: a shift too small to open a region that lasts a while
# would otherwise inflate the spread and hide itself.
OVERDISPERSION = 1.5
DISPERSION_PRIOR_POINTS = 120
MAX_DISPERSION = 4.0
DISPERSION_POINTS = 1080  # the usual points it is learned from: the latest three hours at a 10 s step
DISPERSION_CLIP = 2.5
CLIPPED_NORMAL_SQUARE = 0.977560  # E[min(Z^2, 2.5^2)] of a standard normal Z: what the clipping leaves of 1
# Quantiles are judged on a log scale, where the sampling noise of a high quantile of few samples is
# close to symmetric (on the linear scale it has a long upper tail that a z-score mistakes for an
# anomaly). A sample p-quantile of n draws varies by sqrt(p(1-p)/n) / f(q); for latencies log-normal
# with a log-spread of sigma, log q varies by sigma * sqrt(p(1-p)/n) / phi(z_p): about 1.3/sqrt(n) for
# a p95 at sigma = 0.6 (the load generator's is 0.45). Heavier tails widen the learned deviation.
QUANTILE_LOG_SPREAD = 0.6
P95_LOG_NOISE = QUANTILE_LOG_SPREAD * math.sqrt(0.95 * 0.05) / NormalDist().pdf(NormalDist().inv_cdf(0.95))
HISTOGRAM_LOG_ERROR = math.log(1.1) / 2  # a value read at its bucket's geometric middle
CLIP_Z = 2.0  # residuals beyond this many scales are clipped when learning
LEARN_BELOW_Z = 3.0  # points this unusual (or inside a region) are not learned from, for a while
ANOMALY_LEARNING_WEIGHT = 0.1
ABSORB_AFTER_STEPS = 180  # 30 minutes at the sidecar's 10 s step
# A rate (how many shoppers come, order, spend) that has stayed unusual this long has a new level: the
# baseline takes the median of the latest ADOPT_FROM_STEPS points as its level, instead of creeping
# toward it at ANOMALY_LEARNING_WEIGHT for hours while every noisy step reopens a region (the caller
# says when not to: while its shoppers meet a failure). Ratios and latencies (what shoppers meet: failed
# payments, a slow checkout) keep creeping: a payment outage that lasts stays told until payments recover.
ADOPT_AFTER_STEPS = 120  # 20 minutes at the sidecar's 10 s step
ADOPT_FROM_STEPS = 60  # the latest 10 minutes
ADOPTED_KINDS = frozenset({"rate"})
HST_AGREES = 0.7  # River's HalfSpaceTrees score from which it counts as seeing the point as unusual
# Its scores are calibrated against its own: the share of its latest HST_SCORES scores of usual points
# below a point's, once it has HST_CALIBRATE_AFTER of them.
HST_SCORES = 1000
HST_CALIBRATE_AFTER = 100
BAND_SDS = 2.0  # the seasonal band is this many residual standard deviations either side (seasonal.py)
# Self-calibration: how far out this series' own |z| reaches in its 0.5 % tail, against a normal
# series' 2.81. A heavier tail (bursty arrivals, a noisier measurement than counting explains)
# stretches the z scale by the ratio, so "|z| >= 4" keeps meaning "as rare as 4 sigma would be".
TAIL_QUANTILE = 0.995
NORMAL_TAIL_Z = NormalDist().inv_cdf(1 - (1 - TAIL_QUANTILE) / 2)
CUSUM_TAIL = 0.999  # the CUSUM's decay is read off this quantile of its sums: far out, where heavy tails show
CALIBRATE_AFTER = 360  # points seen before the tail estimate is trusted (an hour at the sidecar's 10 s step)
# The context detector's memory: its last this many usual points (about two days at a 5-minute step),
# its first judgement after CONTEXT_MIN_POINTS, and how far its z is stretched until it knows its tail.
CONTEXT_POINTS = 500
CONTEXT_MIN_POINTS = 100
CONTEXT_STRETCH = 2.0
FLAT_CONTEXT_Z = 16.0  # any change of a flat context: as rare as 8 sigma once stretched until its tail is known
# The seasonal profile (``SeasonalProfileZ``): the periods it tries, how many of each it keeps, from how
# many it judges, the points whose intervals set its sampling interval, the fewest phases a period
# must have at that interval, and how much of the values' variance its residuals may keep for it to speak.
DAY_S = 86400.0
SEASONAL_PERIODS_S = (DAY_S, 7 * DAY_S)
SEASONAL_PERIODS = 7
MIN_PERIODS = 3
INTERVAL_POINTS = 20
MIN_PHASES = 12
SEASONAL_EXPLAINS = 0.5
# A daily recurrence (``SeasonalProfileZ``): a value the series reached within RECURRENCE_WITHIN_S of this
# time of day on each of the last RECURRENCE_DAYS days — at least RECURRENCE_SHARE of the way from the
# baseline's expected value to it — is what the series does then (a nightly job, a daily report run
# a little earlier or later each day), however rare the baseline finds it.
RECURRENCE_DAYS = 3
RECURRENCE_WITHIN_S = 3600.0
RECURRENCE_SHARE = 0.8
# The record detector: how many of the latest usual points a value must go beyond (about a week at a
# 5-minute step), and how many it needs before it says anything.
RECORD_POINTS = 2000
RECORD_MIN_POINTS = 500
LEVEL = "level"  # the evidence of the detectors that measure a deviation from a learned level
# A point's z beyond this adds no more to the CUSUM: one outlier is the baseline's to judge, and a
# shift the CUSUM is for moves many points by a little.
CUSUM_CLIP_Z = 4.0


@dataclass(frozen=True)
class SeasonalBand:
    """The seasonal baseline's band for a series at one time of the week (``expected_band``)."""

    lower: float
    upper: float

    def contains(self, value: float) -> bool:
        return self.lower <= value <= self.upper


@dataclass(frozen=True)
class Point:
    """One evaluation of a series: its value and the evidence behind it (events or trials counted)."""

    value: float
    count: float  # events (for rates) or trials (for ratios) the value was computed from
    kind: str  # "rate" (events/s over window_s), "ratio" (successes/trials), "quantile" (a p95 of count samples),
    #            "log_quantile" (its logarithm, as the detectors judge it), "level"
    window_s: float = 60.0
    band: SeasonalBand | None = None  # the seasonal band for this time of the week, where one is fitted
    previous: float | None = None  # the series' previous value (on the judged scale), set by SeriesDetector
    expected: float | None = None  # the baseline's expected value for it (on the judged scale), set by SeriesDetector
    anomalous: bool = False  # inside an anomaly region, or its country in an open incident (set by SeriesDetector)
    # A ratio of two event counts of the window rather than successes among trials (orders per cart
    # added: an order's cart may have been added in an earlier window); ``complement``: the value is
    # one minus that ratio (cart abandonment).
    flow: bool = False
    complement: bool = False
    at: float | None = None  # Unix seconds, where a detector can use the time of day (detect --csv)

    def judged(self) -> Point:
        """The point on the scale the detectors judge it: quantiles (and their band) by their logarithm."""
        if self.kind != "quantile":
            return self
        band = None if self.band is None else SeasonalBand(math.log(max(self.band.lower, 1e-9)),
                                                           math.log(max(self.band.upper, 1e-9)))
        return replace(self, value=math.log(max(self.value, 1e-9)), kind="log_quantile", band=band)

    def at_level(self, factor: float) -> Point:
        """A rate as it would read at the usual level when ``factor`` times it is expected (a known event's):
        its value and band divided by ``factor``, its events kept — their counting noise stays exact."""
        if factor == 1.0:
            return self
        band = None if self.band is None else SeasonalBand(self.band.lower / factor, self.band.upper / factor)
        return replace(self, value=self.value / factor, band=band)

    def counting_z(self, expected: float, dispersion: float = OVERDISPERSION) -> float | None:
        """How rare the point's count is against ``expected`` if only counting varied, as a signed z
        (``counting.py``: exact tails, binomial for a ratio, for a flow ratio its numerator given both
        counts, Poisson for a rate's events), shrunk by ``dispersion``; None where no count is behind
        the value (a quantile, a level, a rate of no events)."""
        n = round(self.count)
        if self.kind == "ratio" and n > 0:
            if self.flow:
                ratio, usual = (1 - self.value, 1 - expected) if self.complement else (self.value, expected)
                z = flow_ratio_z(round(ratio * n), n, usual)
                return (-z if self.complement else z) / dispersion
            return binomial_z(round(self.value * n), n, expected) / dispersion
        if self.kind == "rate" and n > 0 and self.value > 0:
            return poisson_z(n, n * expected / self.value) / dispersion  # the events the expected value means
        return None

    def noise_sd(self, expected: float | None = None, dispersion: float = OVERDISPERSION) -> float:
        """The standard deviation counting alone would give the value: a ratio p of n trials varies by
        sqrt(p(1-p)/n); a rate built from n events by value/sqrt(n) (each event's weight times
        sqrt(n)) — both times ``dispersion`` (a ratio at the ``expected`` value, when given); the
        logarithm of a p95 of n samples by P95_LOG_NOISE/sqrt(n) plus the histogram's bucket error."""
        n = max(self.count, 1.0)
        if self.kind == "level":  # a measurement without counts behind it: its own spread is the only scale
            return 0.0
        if self.kind == "ratio":  # under "nothing changed" the spread is that of the expected proportion
            p = min(max(self.value if expected is None else expected, 0.0), 1.0)
            return dispersion * math.sqrt(max(p * (1 - p), 0.25 / n) / n)
        if self.kind == "log_quantile":
            return P95_LOG_NOISE / math.sqrt(n) + HISTOGRAM_LOG_ERROR
        if self.kind == "quantile":
            raise ValueError("a quantile is judged on its log scale: call Point.judged() first")
        return dispersion * (abs(self.value) / math.sqrt(n) if self.count > 0 else 1.0 / self.window_s)


Range = tuple[float, float]  # the lowest and highest multiple of its usual a known event may take a rate to
USUAL: Range = (1.0, 1.0)


def level_factor(point: Point, usual: float | None, within: Range) -> float:
    """The multiple of ``usual`` a known event's point is judged against: a rate between the ``within``
    multiples is the usual for the event (itself), one beyond them is judged against the nearer; other
    kinds, and a series with no usual yet, against the usual."""
    if point.kind not in ADOPTED_KINDS or usual is None or usual <= 0:
        return 1.0
    return min(max(point.value / usual, within[0]), within[1])


@dataclass(frozen=True)
class Opinion:
    """What one detector makes of one point."""

    detector: str
    # How unusual the detector finds the point for this series, as a probability (``as_likelihood`` of its
    # surprise): 0.99 means one usual point in a hundred would look as unusual or more.
    score: float
    unusual: bool | None  # True: an anomaly; False: the usual for this series (a veto); None: cannot tell
    # How rare the point is for this series, as the |z| of a normal deviate as rare: what lets a detector
    # other than the baseline propose a region. 0 from a detector that does not measure rarity.
    surprise: float = 0.0
    # A veto (``unusual`` False) that holds against overwhelming evidence too: the value itself is what the
    # series does at this time every day, however far it is from the baseline.
    firm: bool = False
    # What the judgement rests on: detectors that look at the same thing (LEVEL: how far the value is from
    # a learned level) agreeing are one piece of evidence, not two. "": the detector's own.
    evidence: str = ""

    def basis(self) -> str:
        return self.evidence or self.detector


class Detector(Protocol):
    """River's anomaly-detector idiom on a ``Point``. Every point is offered to ``learn_one``; a
    ``weight`` below 1 marks an unusual one: 0 while it is news (nothing to learn from it), a small
    weight once an anomaly has lasted (a level shift becoming the new normal), which a detector may
    decline."""

    name: str

    @property
    def decides(self) -> bool:
        """Whether its opinion can open, hold or veto a region; one that only adds to the combined score
        need not run where no score is kept (a backtest)."""
        ...

    def score_one(self, point: Point) -> Opinion: ...

    def learn_one(self, point: Point, weight: float = 1.0) -> None: ...


def as_likelihood(surprise: float) -> float:
    """A surprise (the |z| of a normal deviate as rare) as a probability: the share of a normal series'
    points less rare — 0.954 at 2, 0.99994 at 4 (one minus ``rarity_as_z``'s tail)."""
    return math.erf(max(surprise, 0.0) / math.sqrt(2.0))


def combined_likelihood(opinions: tuple[Opinion, ...]) -> float:
    """The opinions' scores as one: one minus the rarest one's tail probability times their number
    (Bonferroni's bound: of k detectors looking at usual points, the rarest finds a tail of p or less
    at most k times as often as one does), at least 0."""
    if not opinions:
        return 0.0
    return max(0.0, 1.0 - len(opinions) * min(1.0 - o.score for o in opinions))


def tail_stretch(tail: stats.Quantile, calibrated: int, until_known: float) -> float:
    """How much further out than a normal series' this series' |z| reaches at TAIL_QUANTILE (at least
    1), once ``calibrated`` points have shown it; ``until_known`` before."""
    if calibrated < CALIBRATE_AFTER:
        return until_known
    return max(1.0, float(tail.get() or 0.0) / NORMAL_TAIL_Z)


def counting_floored(learned: float, counting: float) -> float:
    """A z in learned spreads, never further out than the count's own tail says (exact for few events,
    where spreads overstate it); 0 where the two disagree in sign (a rounding of the count's tail to the
    other side: nothing to see)."""
    if learned * counting <= 0:
        return 0.0
    return math.copysign(min(abs(learned), abs(counting)), learned)


def dispersion_from(seen: int, mean_counting_sq: float) -> float:
    """The overdispersion factor from ``seen`` points' mean clipped squared counting z, shrunk toward
    the prior ``OVERDISPERSION`` (worth ``DISPERSION_PRIOR_POINTS`` points) while they are few."""
    learned = mean_counting_sq / CLIPPED_NORMAL_SQUARE if seen else 0.0
    variance = (DISPERSION_PRIOR_POINTS * OVERDISPERSION ** 2 + seen * learned) / (DISPERSION_PRIOR_POINTS + seen)
    return min(MAX_DISPERSION, max(1.0, math.sqrt(variance)))


@dataclass
class RobustZ:
    alpha: float = 0.02  # per step; at a 10 s step the baseline's memory is about 8 minutes
    beta: float = 0.0  # how fast the trend follows (Holt's linear method); 0: a level without a trend
    # Stretch z by the series' own tail (below). Off for the store's count and ratio metrics: their
    # counting floors already set the scale, and in `shoppulse score` the stretch cost the abandonment
    # surge's detection (a ratio of few carts has a heavy tail against its learned spread).
    self_calibrating: bool = False
    absorb_spread: bool = False  # inside an anomaly, let its spread widen the baseline's too
    level: float | None = None
    trend: float = 0.0
    deviation: float = 0.0
    seen: int = 0
    name: str = "robust_z"
    decides: ClassVar[bool] = True
    tail: stats.Quantile = field(default_factory=lambda: stats.Quantile(TAIL_QUANTILE))
    calibrated: int = 0
    # the usual points' squared counting z at no overdispersion, clipped: the series' own dispersion
    counting_sq: utils.Rolling = field(default_factory=lambda: utils.Rolling(stats.Mean, window_size=DISPERSION_POINTS))
    _dispersion: float = field(default_factory=lambda: dispersion_from(0, 0.0), repr=False)

    @property
    def warm(self) -> bool:
        return self.seen >= WARM_UP_POINTS

    def z(self, point: Point) -> float:
        """The point's deviation from the level in this series' own units: scales of its spread (at
        least the counting noise), stretched by how heavy its tail has turned out to be. A
        self-calibrating baseline judges nothing (0) until it knows that tail: before, a series
        whose spikes are its usual would read as one anomaly after another."""
        if self.self_calibrating and self.calibrated < CALIBRATE_AFTER:
            return 0.0
        return self._raw_z(point) / self.tail_factor()

    def tail_factor(self) -> float:
        return tail_stretch(self.tail, self.calibrated, 1.0)

    def dispersion(self) -> float:
        """How much more than counting alone this series' counts vary, as a factor on the counting z
        (learned in ``calibrate_one``)."""
        return self._dispersion

    def calibrate_one(self, point: Point) -> None:
        """Learn how far this series' |z| reaches, and how overdispersed its counts are, from every
        point outside an anomaly region — the unusual ones too: knowing how often the series looks
        unusual is the point."""
        if not self.warm:
            return
        expected = self.expected
        counting = None if expected is None else point.counting_z(expected, dispersion=1.0)
        if counting is not None:
            self.counting_sq.update(min(counting * counting, (DISPERSION_CLIP * self._dispersion) ** 2))
            self._dispersion = dispersion_from(len(self.counting_sq.window), float(self.counting_sq.obj.get()))
        if self.self_calibrating:
            self.tail.update(abs(self._raw_z(point)))
            self.calibrated += 1

    @property
    def expected(self) -> float | None:
        """The next point's expected value: the level, moved on by the trend."""
        return None if self.level is None else self.level + self.trend

    def _raw_z(self, point: Point) -> float:
        """The deviation in scales of the learned spread, but never more than the counting tail says a
        deviation that large is rare (exact for few events, where sqrt(n) scales overstate it)."""
        expected = self.expected
        if expected is None:
            return 0.0
        counting = point.counting_z(expected, self.dispersion())
        if counting is None:
            return (point.value - expected) / self._scale(point, expected)
        return counting_floored((point.value - expected) / max(self.learned_scale(), 1e-9), counting)

    def spread_z(self, value: float, widen: float = 1.0) -> float | None:
        """``value``'s deviation from the expected one in learned spreads, each widened ``widen`` times (a
        value over a shorter window than the series' own varies more); None before the series is warm."""
        expected = self.expected
        if expected is None or not self.warm:
            return None
        return (value - expected) / max(self.learned_scale() * widen, 1e-9)

    def _scale(self, point: Point, expected: float) -> float:
        """The learned spread (bias-corrected: early on the running deviation has absorbed only part of
        its weight), never below the counting noise of a point at the expected value."""
        return max(self.learned_scale(), point.noise_sd(expected, self.dispersion()), 1e-9)

    def learned_scale(self) -> float:
        """The learned spread as a standard deviation (1.4826 MADs for normal noise)."""
        return 1.4826 * self._corrected()

    def score_one(self, point: Point) -> Opinion:
        z = self.z(point)
        if not self.warm:
            return Opinion(self.name, 0.0, None, evidence=LEVEL)
        return Opinion(self.name, as_likelihood(abs(z)), True if abs(z) >= LEARN_BELOW_Z else None, abs(z),
                       evidence=LEVEL)

    def learn_one(self, point: Point, weight: float = 1.0) -> None:
        """Huber-style: a residual counts at most ``CLIP_Z`` scales, so a drift that is starting does not
        inflate the scale it is measured against (it would hide itself). A down-weighted point (inside
        an anomaly) moves the level, and the spread only with ``absorb_spread``; weight 0 nothing."""
        if weight <= 0.0:
            return
        self.seen += 1
        expected = self.expected
        if self.level is None or expected is None:
            self.level = point.value
            return
        residual = point.value - expected
        if self.seen > WARM_UP_POINTS:  # before that the scale itself is still being learned
            scale = self._scale(point, expected)
            residual = max(-CLIP_Z * scale, min(CLIP_Z * scale, residual))
        rate = self.alpha * weight
        if weight >= 1.0 or self.absorb_spread:
            self.deviation += rate * (abs(residual) - self.deviation)
        self.level = expected + rate * residual
        if weight >= 1.0:  # an anomaly, even one being absorbed, is no trend
            self.trend += self.beta * rate * residual

    def adopt_level(self, level: float) -> None:
        """Take ``level`` as the series' usual from now on (a lasting shift), its spread unchanged."""
        self.level, self.trend = level, 0.0

    def _corrected(self) -> float:
        return self.deviation / (1 - (1 - self.alpha) ** max(self.seen - 1, 1))


def half_space_trees(seed: int) -> compose.Pipeline:
    return compose.Pipeline(preprocessing.MinMaxScaler(),
                            anomaly.HalfSpaceTrees(n_trees=15, height=6, window_size=120, seed=seed))


@dataclass
class HalfSpaceTreesDetector:
    """River's HalfSpaceTrees on the level and its change since the previous point. It corroborates
    (never vetoes: a low isolation score says little) and learns from normal points only. Its score is
    calibrated by the series: the share of its scores of the latest usual points below this one (an
    isolation score of 0.9 is routine for one series and unheard of for another)."""

    seed: int = 7
    model: compose.Pipeline | None = None  # built at its first point: a replay that drops it never pays for it
    name: str = "half_space_trees"
    # Whether its agreement opens a region at the first strong step. On arbitrary series (detect --csv)
    # its score is high through much of the series, so it would make every strong step open one.
    corroborates: bool = True
    usual_scores: utils.SortedWindow[float] = field(default_factory=lambda: utils.SortedWindow(size=HST_SCORES))
    _pending: tuple[Point, float] | None = None  # the raw score of the point just scored, for learn_one

    @property
    def decides(self) -> bool:
        return self.corroborates

    def trees(self) -> compose.Pipeline:
        if self.model is None:
            self.model = half_space_trees(self.seed)
        return self.model

    @staticmethod
    def features(point: Point) -> dict[str, float]:
        return {"level": point.value,
                "change": point.value - (point.previous if point.previous is not None else point.value)}

    def raw_score(self, point: Point) -> float:
        if self._pending is not None and self._pending[0] is point:
            return self._pending[1]
        raw = float(self.trees().score_one(self.features(point)))
        self._pending = (point, raw)
        return raw

    def likelihood(self, raw: float) -> float:
        """The share of its scores of the latest usual points below ``raw`` (0 until it has enough)."""
        seen = len(self.usual_scores)
        return 0.0 if seen < HST_CALIBRATE_AFTER else bisect_left(self.usual_scores, raw) / (seen + 1)

    def score_one(self, point: Point) -> Opinion:
        raw = self.raw_score(point)
        return Opinion(self.name, self.likelihood(raw), True if self.corroborates and raw >= HST_AGREES else None)

    def learn_one(self, point: Point, weight: float = 1.0) -> None:
        if weight >= 1.0:
            self.usual_scores.append(self.raw_score(point))
            self.trees().learn_one(self.features(point))
        self._pending = None


@dataclass
class SeasonalBandDetector:
    """Inside the seasonal band a value is the usual for its time of the week (a veto on a fast
    baseline that lags the daily swing); outside it, unusual. It learns offline: ``seasonal.refit``
    fits Holt-Winters on the history in ClickHouse and the band arrives with each point."""

    name: str = "seasonal_band"
    decides: ClassVar[bool] = True

    def score_one(self, point: Point) -> Opinion:
        """A veto inside the band, a corroboration outside; scored by the value's z against the band's
        expectation (its middle, BAND_SDS residual deviations from either edge)."""
        band = point.band
        if band is None:
            return Opinion(self.name, 0.0, None)
        half_width = max((band.upper - band.lower) / 2, 1e-9)
        z = BAND_SDS * abs(point.value - (band.upper + band.lower) / 2) / half_width
        return Opinion(self.name, as_likelihood(z), not band.contains(point.value))

    def learn_one(self, point: Point, weight: float = 1.0) -> None:
        """Nothing to learn online: the band is refitted from ClickHouse."""


@dataclass
class ContextZ:
    """The point against the mean and standard deviation of the series' last ``points`` usual points: a
    long memory beside the baseline's short one. A burst that lasts, a level shift or a new pattern
    the baseline adopts within a few dozen points stays unusual here until the context has seen
    enough of it. That context mixes the day's swings and regimes, so its z is far from normal: its
    surprise is its z stretched by how heavy the series' own tail of context z has turned out to be
    (as ``RobustZ`` stretches its z), learned from every point outside a region; until it has seen
    CALIBRATE_AFTER of them, by ``CONTEXT_STRETCH`` (a point 8 deviations out counts as rare as 4
    sigma: by Chebyshev's inequality at most one point in 64 of any series lies that far out). A
    bursty series' bursts so stop reading as news, and a smooth series' subtler changes start to. It
    learns its context from usual points only and says nothing before it has ``CONTEXT_MIN_POINTS`` —
    nor, for points with a time, before its context spans a day: the first evening of a series with a
    daily rhythm is not news against its afternoon."""

    points: int = CONTEXT_POINTS
    name: str = "context_z"
    decides: ClassVar[bool] = True
    context: utils.Rolling = field(init=False)  # a variance over the window, with its mean
    tail: stats.Quantile = field(default_factory=lambda: stats.Quantile(TAIL_QUANTILE))
    calibrated: int = 0
    since: float | None = None  # the time of its first context point

    def __post_init__(self) -> None:
        self.context = utils.Rolling(stats.Var, window_size=self.points, ddof=0)

    def z(self, value: float) -> float | None:
        if len(self.context.window) < CONTEXT_MIN_POINTS:
            return None
        deviation = value - float(self.context.obj.mean.get())
        spread = math.sqrt(max(float(self.context.obj.get()), 0.0))
        if spread <= 1e-12:  # a flat context: any change at all is news
            return 0.0 if abs(deviation) <= 1e-12 else math.copysign(FLAT_CONTEXT_Z, deviation)
        return deviation / spread

    def stretch(self) -> float:
        return tail_stretch(self.tail, self.calibrated, CONTEXT_STRETCH)

    def score_one(self, point: Point) -> Opinion:
        z = self.z(point.value)
        if z is None or (point.at is not None and self.since is not None and point.at - self.since < DAY_S):
            return Opinion(self.name, 0.0, None, evidence=LEVEL)
        surprise = abs(z) / self.stretch()
        return Opinion(self.name, as_likelihood(surprise), True if surprise >= LEARN_BELOW_Z else None, surprise,
                       evidence=LEVEL)

    def learn_one(self, point: Point, weight: float = 1.0) -> None:
        if point.anomalous:
            return
        z = self.z(point.value)
        if z is not None:
            self.tail.update(abs(z))
            self.calibrated += 1
        if weight < 1.0:  # the context is what the series usually does
            return
        self.context.update(point.value)
        if self.since is None:
            self.since = point.at


@dataclass
class SeasonalProfileZ:
    """The point against the same time of day (or of the week) in the series' last ``periods`` periods:
    the median of those values, and of their neighbours a sampling interval either side, is the
    expected one, and a baseline of its own judges the residual (its scale and heavy tail learned
    from the series, as ``RobustZ`` does). It speaks only where the series has that rhythm: when the
    residuals of its usual points vary at most ``SEASONAL_EXPLAINS`` as much as the values do, the
    period being the one that explains more. Then a value as usual as any for its time (within
    ``close_z`` of its profile) is the usual — a veto on a baseline that sees the daily peak as news —
    and a value unlike every recent day at this time is unusual, however usual its level is overall.
    Where the profile does not find a point unusual, a value the series reached at about this time on
    each of the last days is the usual, firmly (``RECURRENCE_DAYS``: a nightly job's spike, which
    comes a little earlier or later each day, so the profile of exact phases does not hold it).
    The sampling interval is the median of the first points' intervals; points need ``at``."""

    periods: int = SEASONAL_PERIODS
    name: str = "seasonal_profile"
    decides: ClassVar[bool] = True
    close_z: float = 2.0
    interval: float | None = None
    _intervals: list[float] = field(default_factory=list)
    _last_at: float | None = None
    _profiles: dict[float, _PhaseProfile] = field(default_factory=dict)
    # every point of the last RECURRENCE_DAYS days (anomalous ones too: what recurs each day is the usual,
    # even if the first days' were news), by time, from ``_head`` on
    _times: list[float] = field(default_factory=list)
    _values: list[float] = field(default_factory=list)
    _head: int = 0

    def _learn_interval(self, at: float) -> None:
        if self._last_at is not None and at > self._last_at and self.interval is None:
            self._intervals.append(at - self._last_at)
            if len(self._intervals) >= INTERVAL_POINTS:
                self.interval = median(self._intervals)
                self._profiles = {period: _PhaseProfile(period, self.interval, self.periods)
                                  for period in SEASONAL_PERIODS_S if period >= MIN_PHASES * self.interval}
        self._last_at = at if self._last_at is None else max(self._last_at, at)

    def _rhythm(self) -> _PhaseProfile | None:
        """The profile that explains the series best, if any explains it."""
        explaining = [p for p in self._profiles.values() if p.explains()]
        return min(explaining, key=lambda p: p.unexplained_share(), default=None)

    def score_one(self, point: Point) -> Opinion:
        opinion = self._by_profile(point)
        if opinion.unusual is not True and self._recurs(point):
            return replace(opinion, unusual=False, firm=True)
        return opinion

    def _by_profile(self, point: Point) -> Opinion:
        rhythm = None if point.at is None else self._rhythm()
        if rhythm is None or point.at is None or (z := rhythm.z(point.at, point.value)) is None:
            return Opinion(self.name, 0.0, None)
        surprise = abs(z)
        unusual = True if surprise >= LEARN_BELOW_Z else False if surprise < self.close_z else None
        return Opinion(self.name, as_likelihood(surprise), unusual, surprise)

    def _recurs(self, point: Point) -> bool:
        """Whether the series went as far from its expected value, the same way, within RECURRENCE_WITHIN_S
        of this time of day on each of the last RECURRENCE_DAYS days."""
        if point.at is None or point.expected is None or point.value == point.expected:
            return False
        reach = point.expected + RECURRENCE_SHARE * (point.value - point.expected)
        above = point.value > point.expected
        for day in range(1, RECURRENCE_DAYS + 1):
            centre = point.at - day * DAY_S
            first = bisect_left(self._times, centre - RECURRENCE_WITHIN_S, self._head)
            last = bisect_right(self._times, centre + RECURRENCE_WITHIN_S, first)
            if first == last:
                return False
            that_day = self._values[first:last]
            if (max(that_day) < reach) if above else (min(that_day) > reach):
                return False
        return True

    def _remember(self, at: float, value: float) -> None:
        if self._times and at < self._times[-1]:  # a row out of order (detect --csv keeps file order)
            index = bisect_right(self._times, at, self._head)
            self._times.insert(index, at)
            self._values.insert(index, value)
        else:
            self._times.append(at)
            self._values.append(value)
        self._head = bisect_left(self._times, at - RECURRENCE_DAYS * DAY_S - RECURRENCE_WITHIN_S, self._head)
        if self._head > len(self._times) // 2:
            del self._times[:self._head], self._values[:self._head]
            self._head = 0

    def learn_one(self, point: Point, weight: float = 1.0) -> None:
        if point.at is None:
            return
        self._learn_interval(point.at)
        self._remember(point.at, point.value)
        for profile in self._profiles.values():
            profile.learn_one(point.at, point.value, usual=weight >= 1.0 and not point.anomalous)


@dataclass
class _PhaseProfile:
    """One period's profile: the latest ``periods`` values at each phase of it, each with the number of
    the period it was in."""

    period: float
    interval: float
    periods: int
    phases: dict[int, deque[tuple[int, float]]] = field(default_factory=dict)
    residual: RobustZ = field(default_factory=lambda: RobustZ(alpha=0.01, self_calibrating=True))
    residual_var: utils.Rolling = field(default_factory=lambda: utils.Rolling(stats.Var, window_size=CONTEXT_POINTS))
    value_var: utils.Rolling = field(default_factory=lambda: utils.Rolling(stats.Var, window_size=CONTEXT_POINTS))

    def _where(self, at: float) -> tuple[int, int]:
        return int(at // self.period), int((at % self.period) // self.interval)

    def expected(self, at: float) -> float | None:
        """The median of the earlier periods' values at this phase and the phases either side, once
        MIN_PERIODS periods have some."""
        number, phase = self._where(at)
        count = max(1, int(self.period // self.interval))
        earlier = [(n, value) for near in (phase - 1, phase, phase + 1)
                   for n, value in self.phases.get(near % count, ()) if n < number]
        return median(value for _, value in earlier) if len({n for n, _ in earlier}) >= MIN_PERIODS else None

    def z(self, at: float, value: float) -> float | None:
        expected = self.expected(at)
        if expected is None:
            return None
        return self.residual.z(Point(value - expected, 0.0, "level"))

    def unexplained_share(self) -> float:
        """The residuals' variance as a share of the values' (1: the profile explains nothing)."""
        values = float(self.value_var.obj.get())
        return float(self.residual_var.obj.get()) / values if values > 1e-12 else 1.0

    def explains(self) -> bool:
        return (self.residual.calibrated >= CALIBRATE_AFTER and len(self.residual_var.window) >= CONTEXT_MIN_POINTS
                and self.unexplained_share() <= SEASONAL_EXPLAINS)

    def learn_one(self, at: float, value: float, usual: bool) -> None:
        if not usual:  # an anomaly is not part of the profile, nor of how far values stray from it
            return
        expected = self.expected(at)
        if expected is not None:
            residual = Point(value - expected, 0.0, "level")
            self.residual.calibrate_one(residual)
            self.residual.learn_one(residual)
            self.residual_var.update(residual.value)
            self.value_var.update(value)
        number, phase = self._where(at)
        self.phases.setdefault(phase, deque(maxlen=self.periods)).append((number, value))


@dataclass
class RecordDetector:
    """Whether the point goes beyond every usual value of the series' last ``points`` — its highest or
    lowest in that long. Evidence of another kind than how far a value is from a level: a bursty
    series' daily bursts are no record, a storm bigger than any in a week is; a machine whose
    temperature falls below anything it has shown is news however wide its swings. It corroborates a
    strong step (never proposes or vetoes), learns usual points only, and says nothing before it has
    RECORD_MIN_POINTS of them."""

    points: int = RECORD_POINTS
    name: str = "record"
    decides: ClassVar[bool] = True
    window: utils.SortedWindow[float] = field(init=False)  # the latest usual values, sorted

    def __post_init__(self) -> None:
        self.window = utils.SortedWindow(size=self.points)

    def score_one(self, point: Point) -> Opinion:
        seen = len(self.window)
        if seen < RECORD_MIN_POINTS:
            return Opinion(self.name, 0.0, None)
        below, above = bisect_left(self.window, point.value), seen - bisect_right(self.window, point.value)
        # its rank from the nearer end: a usual point is as far out or further with probability about
        # 2 * (rank + 1) / (seen + 1)
        rank = min(below, above)
        beyond = seen in (below, above)  # every usual value on one side of it
        return Opinion(self.name, max(0.0, 1.0 - 2.0 * (rank + 1) / (seen + 1)), True if beyond else None)

    def learn_one(self, point: Point, weight: float = 1.0) -> None:
        if weight >= 1.0:
            self.window.append(point.value)


def rarity_as_z(probability: float) -> float:
    """The |z| of a two-sided normal tail with this probability: 1e-4 -> 3.89, 6.3e-5 -> 4.0."""
    if probability >= 1.0:
        return 0.0
    return -NormalDist().inv_cdf(max(probability / 2, 1e-300))


@dataclass
class LevelShiftCusum:
    """Page's CUSUM, both ways, over the baseline's z: each point adds its z beyond ``drift`` to a sum
    that never falls below 0, so a shift of a sigma or two that lasts adds up, where no single point
    reaches the baseline's cut-off. For independent normal z the sum's tail is exponential, P(S > s)
    about exp(-2 * drift * s); residuals that follow one another (a baseline lagging a daily swing)
    have a heavier one, so the decay rate is learned from the series' own sums (their 99.9th
    percentile, over points outside anomalies), never steeper than the independent case. Its
    surprise is the z of that tail probability.

    Points whose windows overlap (the sidecar scores a 60 s window every 10 s: ``overlap`` 6) share
    their evidence, so each adds 1/overlap of its z: one slow payment seen in six windows counts once.
    Each z is clipped at CUSUM_CLIP_Z first."""

    baseline: RobustZ
    overlap: float = 1.0  # how many consecutive points share each point's data (window / step)
    drift: float = 0.5  # k, in scales: half the smallest shift worth accumulating
    high: float = 0.0
    low: float = 0.0
    tail: stats.Quantile = field(default_factory=lambda: stats.Quantile(CUSUM_TAIL))
    calibrated: int = 0
    name: str = "cusum"
    decides: ClassVar[bool] = True
    _pending: tuple[Point, float, float] | None = None

    def _sums(self, point: Point) -> tuple[float, float]:
        if self._pending is not None and self._pending[0] is point:
            return self._pending[1], self._pending[2]
        z = max(-CUSUM_CLIP_Z, min(CUSUM_CLIP_Z, self.baseline.z(point)))
        sums = (max(0.0, self.high + (z - self.drift) / self.overlap),
                max(0.0, self.low + (-z - self.drift) / self.overlap))
        self._pending = (point, *sums)  # learn_one follows score_one, after the baseline has learned
        return sums

    def decay(self) -> float:
        independent = 2 * self.drift
        if self.calibrated < CALIBRATE_AFTER:
            return independent
        return min(independent, -math.log(1 - CUSUM_TAIL) / max(float(self.tail.get() or 0.0), 1e-9))

    def surprise(self, total: float) -> float:
        return rarity_as_z(math.exp(-self.decay() * total))

    def score_one(self, point: Point) -> Opinion:
        if not self.baseline.warm or self.calibrated < CALIBRATE_AFTER:  # silent until it knows its tail
            return Opinion(self.name, 0.0, None, evidence=LEVEL)
        surprise = self.surprise(max(self._sums(point)))
        return Opinion(self.name, as_likelihood(surprise), True if surprise >= LEARN_BELOW_Z else None, surprise,
                       evidence=LEVEL)

    def learn_one(self, point: Point, weight: float = 1.0) -> None:
        """Add the point to the sums, unusual ones too (they are the evidence); inside an anomaly
        region start them over, so the evidence that opened it does not open the next one. The tail
        is learned from the usual points only."""
        if not self.baseline.warm:
            return
        high, low = self._sums(point)
        self._pending = None
        if point.anomalous:
            self.high, self.low = 0.0, 0.0
            return
        if weight >= 1.0:
            self.tail.update(max(high, low))
            self.calibrated += 1
        self.high, self.low = high, low


@dataclass(frozen=True)
class Verdict:
    z: float  # the baseline's signed z (0 until it is warm)
    score: float  # in [0, 1]: how unusual the point is for this series (``combined_likelihood``)
    expected: float  # the baseline's level, on the point's own scale
    warm: bool
    opinions: tuple[Opinion, ...] = ()


def default_detectors(seed: int, baseline: RobustZ) -> list[Detector]:
    # Not the CUSUM (yet): on the store's metrics it tells a flash sale's store-wide mix shift
    # (conversion, checkout, abandonment of the whole store) as incidents of their own.
    # The trees score but do not corroborate: on the store's series they isolate every step the baseline
    # puts at |z| >= 4 (scores 0.84-0.99, noise and incidents alike), so their agreement added no evidence
    # and opened a region at each such step of incident-free traffic; a second strong step does tell
    # them apart (docs/benchmarks.md, "Real-world phenomena").
    return [baseline, HalfSpaceTreesDetector(seed, corroborates=False), SeasonalBandDetector()]


@dataclass
class SeriesDetector:
    seed: int = 7
    robust: RobustZ = field(default_factory=RobustZ)  # the baseline, first among the detectors
    detectors: list[Detector] = field(default_factory=list)
    previous: float | None = None
    absorb_after: int = ABSORB_AFTER_STEPS
    adopt_after: int | None = ADOPT_AFTER_STEPS  # None: a lasting shift is only ever crept toward
    unusual_steps: int = 0
    unusual_values: deque[float] = field(default_factory=lambda: deque(maxlen=ADOPT_FROM_STEPS))

    def __post_init__(self) -> None:
        self.detectors = self.detectors or default_detectors(self.seed, self.robust)

    def step(self, point: Point, anomalous_before: bool, may_adopt: bool = True) -> Verdict:
        """Score ``point`` with every detector, then let them learn from it unless it belongs to an
        anomaly (a rate that has been unusual for ``adopt_after`` steps takes its new level, unless
        ``may_adopt`` is false); the verdict's expected value is on the point's own scale."""
        point, verdict = self._judge(point, anomalous_before)
        z, warm = verdict.z, verdict.warm
        if not anomalous_before:
            self.robust.calibrate_one(point)
        if not (anomalous_before or (warm and abs(z) >= LEARN_BELOW_Z)):
            for detector in self.detectors:
                detector.learn_one(point)
            self.unusual_steps = 0
            self.unusual_values.clear()
        else:  # an incident must not become normal; a shift that lasts for hours eventually must
            self.unusual_steps += 1
            if self.adopt_after is not None and point.kind in ADOPTED_KINDS:
                self.unusual_values.append(point.value)
                if may_adopt and self.unusual_steps >= self.adopt_after:
                    self.robust.adopt_level(median(self.unusual_values))
                    self.unusual_steps = 0
                    self.unusual_values.clear()
            weight = ANOMALY_LEARNING_WEIGHT if self.unusual_steps > self.absorb_after else 0.0
            for detector in self.detectors:
                detector.learn_one(point, weight=weight)
        self.previous = point.value
        return verdict

    def score_one(self, point: Point, within: Range = USUAL) -> Verdict:
        """Score ``point`` and learn nothing from it (a known event's: the usual level stays the one before),
        judged against the multiple of the usual ``level_factor`` gives (the verdict's expected value is it)."""
        factor = level_factor(point, self.robust.expected, within)
        judged, verdict = self._judge(point.at_level(factor), anomalous_before=True)
        self.previous = judged.value
        return verdict if factor == 1.0 else replace(verdict, expected=verdict.expected * factor)

    def _judge(self, observed: Point, anomalous_before: bool) -> tuple[Point, Verdict]:
        """The point as the detectors judge it, and their verdict; the expected value is on its own scale."""
        point = replace(observed.judged(), previous=self.previous, anomalous=anomalous_before,
                        expected=self.robust.expected)
        opinions = tuple(detector.score_one(point) for detector in self.detectors)
        z, warm = self.robust.z(point), self.robust.warm
        score = combined_likelihood(opinions) if warm else 0.0
        expected = self.robust.expected if self.robust.expected is not None else point.value
        if observed.kind == "quantile":
            expected = math.exp(expected)
        return point, Verdict(z if warm else 0.0, score, expected, warm, opinions)
