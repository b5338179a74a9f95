"""How much a rate's events vary over a few live seconds, learned from the live seconds themselves.

The final path learns each series' overdispersion from its 60 s windows, where counting noise is
joined by the level's moves over the minute: a country's product views may vary twenty times as much
as Poisson counts over a minute and three times over five seconds. Judged with the minute's figure,
five seconds of its shop going silent are far less unusual than they are. So the fast path learns,
per series, the variance of its events over blocks of
``BLOCK_S`` usual live seconds around the level its baseline expects, as a multiple of a Poisson
count's (each block's squared counting z, clipped as the final path clips its own), starting from the
final path's figure, which weighs as much as ``PRIOR_BLOCKS`` blocks. The level's moves within a block
are in it; those of longer stretches are not the fast path's concern.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from river import stats, utils

from shoppulse.sidecar.detectors import CLIPPED_NORMAL_SQUARE, DISPERSION_CLIP, RobustZ

BLOCK_S = 5  # the fast path's longest stretch
BLOCKS = 360  # the latest half hour of blocks
PRIOR_BLOCKS = 60  # the final path's figure weighs as much as five minutes of blocks


@dataclass
class LiveDispersion:
    """One series' variance-to-mean ratio over ``BLOCK_S`` live seconds, learned one usual second at a time."""

    squares: utils.Rolling = field(default_factory=lambda: utils.Rolling(stats.Mean, window_size=BLOCKS))
    _events: float = 0.0
    _expected: float = 0.0
    _seconds: int = 0
    _last: datetime | None = None

    def learn_one(self, second: datetime, events: float, expected: float, prior: float) -> None:
        """One more usual live second: its events and the events its baseline expected (``prior``: the
        final path's ratio, ``prior_ratio``). A block holds consecutive seconds only."""
        if self._last is None or second != self._last + timedelta(seconds=1):
            self.skip()
        self._last = second
        self._events, self._expected, self._seconds = self._events + events, self._expected + expected, \
            self._seconds + 1
        if self._seconds < BLOCK_S:
            return
        if self._expected > 0:
            squared = (self._events - self._expected) ** 2 / self._expected
            self.squares.update(min(squared, DISPERSION_CLIP ** 2 * self.ratio(prior)))
        self.skip()

    def skip(self) -> None:
        """The block under way is not learned from: a second is missing, a region open, a gap of the feed."""
        self._events, self._expected, self._seconds = 0.0, 0.0, 0

    def ratio(self, prior: float) -> float:
        """The learned ratio (at least 1: a count varies at least as a Poisson count), shrunk toward
        ``prior`` while the blocks are few."""
        seen = len(self.squares.window)
        learned = float(self.squares.obj.get()) / CLIPPED_NORMAL_SQUARE if seen else 0.0
        return max(1.0, (PRIOR_BLOCKS * prior + seen * learned) / (PRIOR_BLOCKS + seen))


def prior_ratio(baseline: RobustZ, series_window_s: float) -> float:
    """The variance-to-mean ratio of the series' events over ``BLOCK_S`` seconds that its final
    path's baseline implies: its learned spread over its own windows is counting noise (Poisson times
    the learned overdispersion, larger over a shorter window) and whatever more the level moves by
    (taken as the same over any window)."""
    expected = baseline.expected
    dispersion_sq = baseline.dispersion() ** 2
    if expected is None or expected <= 0:
        return dispersion_sq
    counting = dispersion_sq * expected / series_window_s  # a rate's variance over the series' windows
    moves = max(0.0, baseline.learned_scale() ** 2 - counting)
    return dispersion_sq + moves * BLOCK_S / expected
