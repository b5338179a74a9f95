"""Detection scored over labelled series: a folder of ``timestamp,value,label`` CSVs, or a checkout of
the Numenta Anomaly Benchmark (NAB: ``data/<group>/<name>.csv`` of ``timestamp,value`` and the
anomaly windows in ``labels/combined_windows.json``). The sidecar's detectors run over each file as
``shoppulse detect --csv`` runs them.

A labelled window is a run of label 1. It is *found* when a region opens inside it, with a reward
for finding it early: 1.0 at the window's first point, falling linearly to 0.5 at its last. A
region that opens outside every window is a *false region*; their rate is given per 1,000 points,
so long and short files weigh by their length.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from shoppulse.sidecar.csv_detect import CsvInputError, Row, Scored, detect, parse_timestamp, read_rows

NAB_WINDOWS = Path("labels") / "combined_windows.json"


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


def _time_rows(path: Path) -> list[Row]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        try:
            return sorted(read_rows(handle), key=lambda row: row.timestamp)
        except CsvInputError as exc:
            raise CsvInputError(f"{path.name}: {exc}") from None


def score_folder(folder: Path, on_file: Callable[[str], None] = lambda _: None) -> list[SeriesScore]:
    """Score every ``*.csv`` in ``folder`` (by name), rows in time order."""
    scores = []
    for path in sorted(folder.glob("*.csv")):
        on_file(path.name)
        scores.append(score_series(path.stem, detect(_time_rows(path))))
    return scores


def _moment(text: object, where: str) -> datetime:
    if not isinstance(text, str):
        raise ValueError(f"{where}: {text!r} is not a timestamp")
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def nab_windows(checkout: Path) -> dict[str, list[tuple[datetime, datetime]]]:
    """``labels/combined_windows.json``: data file (relative to ``data/``) -> its anomaly windows."""
    path = checkout / NAB_WINDOWS
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: --nab takes a NAB checkout (data/ and {NAB_WINDOWS})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected an object of data file -> list of [start, end] windows")
    windows = {}
    for name, spans in document.items():
        if not isinstance(spans, list) or not all(isinstance(s, list) and len(s) == 2 for s in spans):
            raise ValueError(f"{path}: {name}: expected a list of [start, end] windows")
        windows[name] = [(_moment(a, f"{path.name}: {name}"), _moment(b, f"{path.name}: {name}")) for a, b in spans]
    return windows


def score_nab(checkout: Path, on_file: Callable[[str], None] = lambda _: None) -> list[SeriesScore]:
    """Score every data file a NAB checkout labels, each point labelled 1 inside one of its windows."""
    scores = []
    for name, spans in sorted(nab_windows(checkout).items()):
        path = checkout / "data" / name
        if not path.resolve().is_relative_to((checkout / "data").resolve()):
            raise ValueError(f"{NAB_WINDOWS}: {name!r} is outside data/")
        if not path.is_file():
            raise ValueError(f"{NAB_WINDOWS} labels {name}, but data/{name} is missing")
        on_file(name)
        rows = [replace(row, label=int(any(a <= row.timestamp <= b for a, b in spans))) for row in _time_rows(path)]
        scores.append(score_series(Path(name).stem, detect(rows)))
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
