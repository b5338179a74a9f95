"""The revenue a country would have made: what an incident's revenue at risk is measured against.

Where the seasonal baseline is fitted, its expectation for the time of the week (the middle of its
band). Elsewhere the mean of the country's revenue per second over its last ``USUAL_STEPS`` usual
steps — not the detectors' fast baseline: its eight-minute memory of a series as noisy as revenue
puts its level several per cent off, and an incident's revenue at risk is that error times
everything the country would have sold while it lasts. A step is usual when the country has no
open incident and its revenue no open region, so an outage never lowers its own yardstick.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from river import stats, utils

from shoppulse.sidecar.detectors import SeasonalBand

USUAL_STEPS = 180  # half an hour of 10 s steps
MIN_USUAL_STEPS = 30  # before that, the detectors' baseline


@dataclass
class UsualRevenue:
    mean: utils.Rolling = field(default_factory=lambda: utils.Rolling(stats.Mean, window_size=USUAL_STEPS))

    def learn_one(self, revenue_per_s: float) -> None:
        self.mean.update(revenue_per_s)

    def expected(self, band: SeasonalBand | None, fallback: float) -> float:
        """Revenue per second expected now: the seasonal band's middle, the usual mean, else ``fallback``."""
        if band is not None:
            return (band.lower + band.upper) / 2
        if self.mean.obj.n >= MIN_USUAL_STEPS:  # the steps in the window: all learned, up to USUAL_STEPS
            return float(self.mean.obj.get())
        return fallback
