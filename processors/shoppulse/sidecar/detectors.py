"""Online detectors for one series (one metric in one country), fed one point per evaluation step.

* ``RobustZ``: an EWMA of the level and of the absolute deviation (a streaming median-like scale),
  with a noise floor from counting statistics — a rate of n events has a standard deviation of
  about sqrt(n), a ratio p over n trials sqrt(p(1-p)/n), a p95 (judged by its logarithm) that of a
  sample quantile — so sparse series do not cry wolf. The baseline stops learning while the point
  is anomalous, so an incident does not become normal.
* ``HalfSpaceTrees``: River's online isolation detector on the level and its change; it assumes
  features in [0, 1], so a River ``MinMaxScaler`` sits in front of it in one pipeline.
* ``SeriesDetector`` runs both and blends them into a score in [0, 1] with a signed z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

from river import anomaly, compose, preprocessing

WARM_UP_POINTS = 60
# Events come in sessions (several carts, retried payments), so counts vary more than independent
# trials would: the counting floors are widened by this factor.
OVERDISPERSION = 1.5
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
Z_FOR_FULL_SCORE = 8.0


@dataclass(frozen=True)
class Point:
    """One evaluation of a series: its value and the evidence behind it (events or trials counted)."""

    value: float
    count: float  # events (for rates) or trials (for ratios) the value was computed from
    kind: str  # "rate" (events/s over window_s), "ratio" (successes/trials), "quantile" (a p95 of count samples),
    #            "log_quantile" (its logarithm, as the detectors judge it), "level"
    window_s: float = 60.0

    def judged(self) -> Point:
        """The point on the scale the detectors judge it: quantiles by their logarithm."""
        if self.kind != "quantile":
            return self
        return Point(math.log(max(self.value, 1e-9)), self.count, "log_quantile", self.window_s)

    def noise_sd(self, expected: float | None = None) -> float:
        """The standard deviation counting alone would give the value: a ratio p of n trials varies by
        sqrt(p(1-p)/n); a rate built from n events by value/sqrt(n) (each event's weight times
        sqrt(n)) — both times OVERDISPERSION (a ratio at the ``expected`` value, when given); the
        logarithm of a p95 of n samples by P95_LOG_NOISE/sqrt(n) plus the histogram's bucket error."""
        n = max(self.count, 1.0)
        if self.kind == "level":  # a measurement without counts behind it: its own spread is the only scale
            return 0.0
        if self.kind == "ratio":  # under "nothing changed" the spread is that of the expected proportion
            p = min(max(self.value if expected is None else expected, 0.0), 1.0)
            return OVERDISPERSION * math.sqrt(max(p * (1 - p), 0.25 / n) / n)
        if self.kind == "log_quantile":
            return P95_LOG_NOISE / math.sqrt(n) + HISTOGRAM_LOG_ERROR
        if self.kind == "quantile":
            raise ValueError("a quantile is judged on its log scale: call Point.judged() first")
        return OVERDISPERSION * (abs(self.value) / math.sqrt(n) if self.count > 0 else 1.0 / self.window_s)


@dataclass
class RobustZ:
    alpha: float = 0.02  # per step; at a 10 s step the baseline's memory is about 8 minutes
    level: float | None = None
    deviation: float = 0.0
    seen: int = 0

    def z(self, point: Point) -> float:
        if self.level is None:
            return 0.0
        # Bias-corrected: early on the running deviation has absorbed only part of its weight.
        scale = max(1.4826 * self._corrected(), point.noise_sd(self.level), 1e-9)
        return (point.value - self.level) / scale

    def learn(self, point: Point, weight: float = 1.0, spread: bool = True) -> None:
        """Huber-style: a residual counts at most ``CLIP_Z`` scales, so a drift that is starting does not
        inflate the scale it is measured against (it would hide itself)."""
        self.seen += 1
        if self.level is None:
            self.level = point.value
            return
        residual = point.value - self.level
        if self.seen > WARM_UP_POINTS:  # before that the scale itself is still being learned
            scale = max(1.4826 * self._corrected(), point.noise_sd(self.level), 1e-9)
            residual = max(-CLIP_Z * scale, min(CLIP_Z * scale, residual))
        rate = self.alpha * weight
        if spread:
            self.deviation += rate * (abs(residual) - self.deviation)
        self.level += rate * residual

    def _corrected(self) -> float:
        return self.deviation / (1 - (1 - self.alpha) ** max(self.seen - 1, 1))


def half_space_trees(seed: int) -> compose.Pipeline:
    return compose.Pipeline(preprocessing.MinMaxScaler(),
                            anomaly.HalfSpaceTrees(n_trees=15, height=6, window_size=120, seed=seed))


@dataclass(frozen=True)
class Verdict:
    z: float
    score: float  # in [0, 1]
    hst: float  # River's score in [0, 1]
    expected: float
    warm: bool


@dataclass
class SeriesDetector:
    seed: int = 7
    robust: RobustZ = field(default_factory=RobustZ)
    hst: compose.Pipeline | None = None
    previous: float | None = None
    absorb_after: int = ABSORB_AFTER_STEPS
    absorb_spread: bool = False  # inside an anomaly, let its spread widen the baseline's too
    unusual_steps: int = 0

    def __post_init__(self) -> None:
        self.hst = self.hst or half_space_trees(self.seed)

    def step(self, point: Point, anomalous_before: bool) -> Verdict:
        """Score ``point``, then learn from it unless it belongs to an anomaly; the verdict's expected
        value is on the point's own scale."""
        observed, point = point, point.judged()
        z = self.robust.z(point)
        features = {"level": point.value, "change": point.value - (self.previous if self.previous is not None
                                                                    else point.value)}
        assert self.hst is not None
        hst = float(self.hst.score_one(features))
        warm = self.robust.seen >= WARM_UP_POINTS
        score = min(1.0, abs(z) / Z_FOR_FULL_SCORE) * 0.8 + 0.2 * hst if warm else 0.0
        expected = self.robust.level if self.robust.level is not None else point.value
        if point is not observed:
            expected = math.exp(expected)
        if not (anomalous_before or (warm and abs(z) >= LEARN_BELOW_Z)):
            self.robust.learn(point)
            self.hst.learn_one(features)
            self.unusual_steps = 0
        else:  # an incident must not become normal; a shift that lasts for hours eventually must
            self.unusual_steps += 1
            if self.unusual_steps > self.absorb_after:
                self.robust.learn(point, weight=ANOMALY_LEARNING_WEIGHT, spread=self.absorb_spread)
        self.previous = point.value
        return Verdict(z if warm else 0.0, score, hst, expected, warm)
