"""``shoppulse detect --csv``: the sidecar's detectors over any time series, one score per point.

Input: a CSV with a header holding ``timestamp`` and ``value`` columns (and optionally ``label``,
0/1, as in public benchmarks such as NAB or Yahoo S5). Timestamps are ISO 8601 or Unix seconds
(milliseconds when larger than 1e11). Real exports are untidy, so rows are taken in file order: a
timestamp that repeats or goes back (a clock set back an hour, two sources merged) is scored where
it stands with a warning naming its line, or the rows are ordered by time first (``sort``); a blank
or not-a-number value (``NA``, ``NaN``, ``null``…) is a missing point, written out unscored with the
anomaly flag of the region around it and never learned from; gaps in time are counted.

Output: exactly one row per input row, with ``score`` in [0, 1] (how unusual the point is for this
series, as a probability: the detectors' calibrated scores combined) and ``anomaly`` (1 while a
region is open, with the sidecar's hysteresis but closing only after CLOSE_AFTER_POINTS calm points;
a region that opens again within MERGE_WITHIN_POINTS of closing continues it, the calm points between
flagged too). The baseline judges only once it knows the series' tail; a CUSUM over its z opens a
region for a lasting shift no single point shows, the context detector for a change the baseline
adopts too soon, and the seasonal profile for a value unlike the same time on earlier days (where the
series has a daily or weekly rhythm) — and against a region on what the series did at about this
time each of the last days (a nightly job); a record corroborates. With labels, point- and
event-level scores are reported.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import TextIO

from shoppulse.sidecar.detectors import (
    ContextZ,
    Detector,
    HalfSpaceTreesDetector,
    LevelShiftCusum,
    Point,
    RecordDetector,
    RobustZ,
    SeasonalProfileZ,
    SeriesDetector,
)
from shoppulse.sidecar.regions import RegionTracker

MAX_LINE_CHARS = 64 * 1024
MISSING = {"", "na", "n/a", "nan", "null", "none", "-"}  # how spreadsheets, pandas and R write a missing value
CLOSE_AFTER_POINTS = 12
# A series that flares up again within this many points of calming down has one anomaly, not two:
# bursty series (tweet volumes, disk writes) otherwise raise one region per burst.
MERGE_WITHIN_POINTS = 96
GAP_STEPS = 5  # a pause longer than this many of the series' usual intervals counts as a gap
# Where a region opens (``region_tracker``): chosen on the Numenta Anomaly Benchmark (docs/benchmarks.md).
OPEN_Z = 3.5
OPEN_AT_ONCE_Z = 20.0


class CsvInputError(ValueError):
    """The CSV cannot be read as a time series; the message names the line and what to fix."""


@dataclass(frozen=True)
class Row:
    line: int
    timestamp: datetime
    value: float | None  # None: missing
    label: int | None


@dataclass(frozen=True)
class Scored:
    row: Row
    score: float | None  # None for a missing value
    anomaly: int


def parse_timestamp(text: str) -> datetime:
    """ISO 8601 (UTC unless it says otherwise) or Unix seconds (milliseconds when larger than 1e11);
    ValueError saying which it is not."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and math.isfinite(number):
        try:
            return datetime.fromtimestamp(number / 1000 if number > 1e11 else number, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"timestamp {text[:40]!r} is outside the years 1 to 9999") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"timestamp {text[:40]!r} is neither ISO 8601 nor Unix seconds") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _timestamp(text: str, line: int) -> datetime:
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise CsvInputError(f"line {line}: {exc}") from None


def _bounded_lines(handle: TextIO) -> Iterator[str]:
    """The file's lines, refusing one longer than MAX_LINE_CHARS before it is read whole."""
    number = 0
    while line := handle.readline(MAX_LINE_CHARS + 1):
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise CsvInputError(f"line {number}: longer than {MAX_LINE_CHARS:,} characters; a time series row is "
                                "a timestamp, a value and a label")
        yield line


def read_rows(handle: TextIO, warn: Callable[[str], None] = lambda _: None) -> Iterator[Row]:
    """The rows in file order; ``warn`` hears of each timestamp that repeats or goes back."""
    reader = csv.DictReader(_bounded_lines(handle))
    try:
        yield from _rows(reader, warn)
    except csv.Error as exc:
        raise CsvInputError(f"line {reader.line_num}: {exc}") from None


def _value(text: str, line: int) -> float | None:
    if text.lower() in MISSING:
        return None
    try:
        value = float(text)
    except ValueError:
        raise CsvInputError(f"line {line}: value {text!r} is not a number (leave it blank when it is "
                            "missing)") from None
    if not math.isfinite(value):
        raise CsvInputError(f"line {line}: value {text!r} is not finite")
    return value


def _rows(reader: csv.DictReader[str], warn: Callable[[str], None]) -> Iterator[Row]:
    fields = {name.strip().lower(): name for name in reader.fieldnames or []}
    if "timestamp" not in fields or "value" not in fields:
        raise CsvInputError(f"the header must name 'timestamp' and 'value' columns (found {reader.fieldnames})")
    latest: datetime | None = None
    for record in reader:
        line = reader.line_num
        value = _value((record.get(fields["value"]) or "").strip(), line)
        moment = _timestamp(record.get(fields["timestamp"]) or "", line)
        if latest is not None and moment <= latest:
            how = "repeats" if moment == latest else f"goes back from {latest.isoformat()}"
            warn(f"line {line}: timestamp {moment.isoformat()} {how}; scored in file order (--sort orders by time)")
        latest = moment if latest is None else max(latest, moment)
        label = None
        if "label" in fields:
            raw_label = (record.get(fields["label"]) or "").strip()
            if raw_label not in ("0", "1"):
                raise CsvInputError(f"line {line}: label {raw_label!r} must be 0 or 1")
            label = int(raw_label)
        yield Row(line, moment, value, label)


def gaps(rows: list[Row]) -> int:
    """Pauses longer than GAP_STEPS of the series' usual (median) interval between consecutive rows."""
    intervals = [(b.timestamp - a.timestamp).total_seconds() for a, b in pairwise(rows)]
    forward = sorted(d for d in intervals if d > 0)
    if not forward:
        return 0
    usual = forward[len(forward) // 2]
    return sum(1 for d in intervals if d > GAP_STEPS * usual)


def series_detector(cusum: bool = True) -> SeriesDetector:
    """The detectors ``detect`` runs over one series (without the CUSUM, to see what it adds)."""
    # Points of an arbitrary series may be far apart and trend: a baseline with a shorter memory (about
    # 20 points) that keeps creeping, slowly, inside an anomaly too.
    # Without counts behind a value there is no counting floor: the series' own tail calibrates z, and
    # the baseline says nothing until it knows that tail.
    baseline = RobustZ(alpha=0.05, beta=0.3, absorb_spread=True, self_calibrating=True)
    # A lasting shift of a sigma or two (no point alone stands out) is found by accumulating evidence,
    # one the baseline adopts too soon against the last few hundred points.
    detectors: list[Detector] = [baseline, HalfSpaceTreesDetector(seed=11, corroborates=False),
                                 *([LevelShiftCusum(baseline)] if cusum else []), ContextZ(),
                                 SeasonalProfileZ(), RecordDetector()]
    return SeriesDetector(seed=11, robust=baseline, detectors=detectors, absorb_after=0)


def region_tracker() -> RegionTracker:
    """The sidecar's hysteresis, set for arbitrary series. A real series' anomaly often comes in bursts a
    few points apart: one region for them, not one each. Its values have no natural zero (a machine's
    temperature 10 % up is a fire), so no change is too small in per cent. Its surprises are calibrated
    by its own tails, and the first strong step opens only with evidence of another kind (a record, the
    time of day), so a step is strong from OPEN_Z; one point alone opens from OPEN_AT_ONCE_Z (a bursty
    series' single spikes reach well past 8 sigma of its level)."""
    return RegionTracker("value", "csv", open_z=OPEN_Z, open_at_once_z=OPEN_AT_ONCE_Z, min_change_pct=0.0,
                         close_after=CLOSE_AFTER_POINTS)


def detect(rows: Iterable[Row]) -> Iterator[Scored]:
    """One scored row per row, in order. Regions that open again within MERGE_WITHIN_POINTS of closing
    are one region (the calm points between them flagged too): the rows after a close wait until
    either happens."""
    detector, tracker = series_detector(), region_tracker()
    calm: list[tuple[Row, float | None]] = []  # rows since the last region closed, while it may reopen
    for row in rows:
        score = None
        if row.value is not None:  # a missing value has nothing to judge or learn: the region around it carries on
            verdict = detector.step(Point(row.value, 0.0, "level", at=row.timestamp.timestamp()), tracker.is_open)
            change, score = tracker.step(row.timestamp, row.value, verdict), round(verdict.score, 4)
            if change is not None and change.kind == "closed":
                calm.append((row, score))
                continue
            if change is not None and change.kind == "opened" and calm:
                yield from (Scored(r, s, 1) for r, s in calm)
                calm = []
        if not calm:
            yield Scored(row, score, int(tracker.is_open))
            continue
        calm.append((row, score))
        if len(calm) > MERGE_WITHIN_POINTS:
            yield from (Scored(r, s, 0) for r, s in calm)
            calm = []
    yield from (Scored(r, s, 0) for r, s in calm)


@dataclass(frozen=True)
class Report:
    points: int
    flagged: int
    precision: float | None
    recall: float | None
    events: int
    events_detected: int
    missing: int = 0
    out_of_order: int = 0
    gaps: int = 0


def score_file(source: Path, out: TextIO, sort: bool = False,
               warn: Callable[[str], None] = lambda _: None) -> Report:
    """Score ``source`` into ``out``, one row per input row (in time order with ``sort``, else in file
    order, warning of each timestamp out of order). A header may start with a byte-order mark."""
    out_of_order: list[str] = []
    with source.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(read_rows(handle, out_of_order.append))
    if sort:
        rows.sort(key=lambda row: row.timestamp)  # stable: rows of one timestamp keep their file order
    else:
        for warning in out_of_order:
            warn(warning)
    scored = list(detect(rows))
    writer = csv.writer(out)
    labelled = bool(scored) and scored[0].row.label is not None
    writer.writerow(["timestamp", "value", "score", "anomaly", *(["label"] if labelled else [])])
    for item in scored:
        writer.writerow([item.row.timestamp.isoformat(), "" if item.row.value is None else item.row.value,
                         "" if item.score is None else item.score, item.anomaly,
                         *([item.row.label] if labelled else [])])
    flagged = sum(s.anomaly for s in scored)
    counts = {"missing": sum(1 for row in rows if row.value is None), "out_of_order": len(out_of_order),
              "gaps": gaps(rows)}
    if not labelled:
        return Report(len(scored), flagged, None, None, 0, 0, **counts)
    true_positive = sum(1 for s in scored if s.anomaly and s.row.label)
    positives = sum(1 for s in scored if s.row.label)
    events, detected, inside, hit = 0, 0, False, False
    for item in scored:  # an event is a run of label 1; detected when any of its points is flagged
        if item.row.label and not inside:
            events, inside, hit = events + 1, True, False
        if inside and item.anomaly:
            hit = True
        if inside and not item.row.label:
            detected, inside = detected + int(hit), False
    detected += int(inside and hit)
    return Report(len(scored), flagged, true_positive / flagged if flagged else None,
                  true_positive / positives if positives else None, events, detected, **counts)
