"""Detection scored over a folder of labelled series (``timestamp,value,label`` CSVs, as NAB ships
them): the sidecar's detectors run over each file as ``shoppulse detect --csv`` runs them.

A labelled window is a run of label 1. It is *found* when a region opens inside it, with a reward
for finding it early: 1.0 at the window's first point, falling linearly to 0.5 at its last. A
region that opens outside every window is a *false region*; their rate is given per 1,000 points,
so long and short files weigh by their length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from shoppulse.sidecar.csv_detect import Scored, detect, read_rows


@dataclass(frozen=True)
class SeriesScore:
    name: str
    points: int
    windows: int
    found: int
    reward: float  # summed over the found windows
    false_regions: int

    @property
    def false_per_1000(self) -> float:
        return 1000 * self.false_regions / self.points if self.points else 0.0


def score_series(name: str, scored: Iterable[Scored]) -> SeriesScore:
    rows = list(scored)
    if rows and rows[0].row.label is None:
        raise ValueError(f"{name}: no label column; the corpus needs timestamp,value,label files")
    windows: list[tuple[int, int]] = []  # [first, last] indexes of each run of label 1
    for index, item in enumerate(rows):
        if item.row.label:
            if windows and windows[-1][1] == index - 1:
                windows[-1] = (windows[-1][0], index)
            else:
                windows.append((index, index))
    openings = [i for i, item in enumerate(rows) if item.anomaly and (i == 0 or not rows[i - 1].anomaly)]
    found, reward, false_regions = 0, 0.0, 0
    for first, last in windows:
        inside = [i for i in openings if first <= i <= last]
        if inside:
            found += 1
            reward += 1.0 - 0.5 * (inside[0] - first) / max(last - first, 1)
    for opening in openings:
        if not any(first <= opening <= last for first, last in windows):
            false_regions += 1
    return SeriesScore(name, len(rows), len(windows), found, reward, false_regions)


def score_folder(folder: Path, on_file: Callable[[str], None] = lambda _: None) -> list[SeriesScore]:
    """Score every ``*.csv`` in ``folder`` (by name), rows in time order."""
    scores = []
    for path in sorted(folder.glob("*.csv")):
        on_file(path.name)
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = sorted(read_rows(handle), key=lambda row: row.timestamp)
        scores.append(score_series(path.stem, detect(rows)))
    return scores


@dataclass(frozen=True)
class Totals:
    points: int
    windows: int
    found: int
    reward: float
    false_regions: int

    @property
    def recall(self) -> float:
        return self.found / self.windows if self.windows else 0.0

    @property
    def false_per_1000(self) -> float:
        return 1000 * self.false_regions / self.points if self.points else 0.0


def totals(scores: list[SeriesScore]) -> Totals:
    return Totals(sum(s.points for s in scores), sum(s.windows for s in scores), sum(s.found for s in scores),
                  sum(s.reward for s in scores), sum(s.false_regions for s in scores))
