"""``shoppulse detect --csv``: the sidecar's detectors over any time series, one score per point.

Input: a CSV with a header holding ``timestamp`` and ``value`` columns (and optionally ``label``,
0/1, as in public benchmarks such as NAB or Yahoo S5). Timestamps are ISO 8601 or Unix seconds
(milliseconds when larger than 1e11), strictly increasing. Output: the same rows with ``score`` in
[0, 1] (the blended robust-z and Half-Space-Trees score) and ``anomaly`` (1 while a region is open,
with the same hysteresis as the sidecar). With labels, point- and event-level scores are reported.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from shoppulse.sidecar.detectors import Point, RobustZ, SeriesDetector
from shoppulse.sidecar.regions import RegionTracker

MAX_LINE_CHARS = 64 * 1024


class CsvInputError(ValueError):
    """The CSV cannot be read as a time series; the message names the line and what to fix."""


@dataclass(frozen=True)
class Row:
    line: int
    timestamp: datetime
    value: float
    label: int | None


@dataclass(frozen=True)
class Scored:
    row: Row
    score: float
    anomaly: int


def _timestamp(text: str, line: int) -> datetime:
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and math.isfinite(number):
        try:
            return datetime.fromtimestamp(number / 1000 if number > 1e11 else number, UTC)
        except (OverflowError, OSError, ValueError):
            raise CsvInputError(f"line {line}: timestamp {text[:40]!r} is outside the years 1 to 9999") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CsvInputError(f"line {line}: timestamp {text[:40]!r} is neither ISO 8601 nor Unix seconds") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _bounded_lines(handle: TextIO) -> Iterator[str]:
    """The file's lines, refusing one longer than MAX_LINE_CHARS before it is read whole."""
    number = 0
    while line := handle.readline(MAX_LINE_CHARS + 1):
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise CsvInputError(f"line {number}: longer than {MAX_LINE_CHARS:,} characters; a time series row is "
                                "a timestamp, a value and a label")
        yield line


def read_rows(handle: TextIO) -> Iterator[Row]:
    reader = csv.DictReader(_bounded_lines(handle))
    try:
        yield from _rows(reader)
    except csv.Error as exc:
        raise CsvInputError(f"line {reader.line_num}: {exc}") from None


def _rows(reader: csv.DictReader[str]) -> Iterator[Row]:
    fields = {name.strip().lower(): name for name in reader.fieldnames or []}
    if "timestamp" not in fields or "value" not in fields:
        raise CsvInputError(f"the header must name 'timestamp' and 'value' columns (found {reader.fieldnames})")
    previous: datetime | None = None
    for record in reader:
        line = reader.line_num
        raw_value = (record.get(fields["value"]) or "").strip()
        try:
            value = float(raw_value)
        except ValueError:
            raise CsvInputError(f"line {line}: value {raw_value!r} is not a number") from None
        if not math.isfinite(value):
            raise CsvInputError(f"line {line}: value {raw_value!r} is not finite")
        moment = _timestamp(record.get(fields["timestamp"]) or "", line)
        if previous is not None and moment <= previous:
            raise CsvInputError(f"line {line}: timestamp {moment.isoformat()} does not follow {previous.isoformat()}; "
                                "sort the file by time and drop duplicate timestamps")
        previous = moment
        label = None
        if "label" in fields:
            raw_label = (record.get(fields["label"]) or "").strip()
            if raw_label not in ("0", "1"):
                raise CsvInputError(f"line {line}: label {raw_label!r} must be 0 or 1")
            label = int(raw_label)
        yield Row(line, moment, value, label)


def detect(rows: Iterable[Row]) -> Iterator[Scored]:
    # Points of an arbitrary series may be far apart and trend: a baseline with a shorter memory (about
    # 20 points) that keeps creeping, slowly, inside an anomaly too.
    detector = SeriesDetector(seed=11, robust=RobustZ(alpha=0.05), absorb_after=0, absorb_spread=True)
    tracker = RegionTracker("value", "csv")
    for row in rows:
        point = Point(row.value, 0.0, "level")
        verdict = detector.step(point, tracker.is_open)
        tracker.step(row.timestamp, row.value, verdict)
        yield Scored(row, round(verdict.score, 4), int(tracker.is_open))


@dataclass(frozen=True)
class Report:
    points: int
    flagged: int
    precision: float | None
    recall: float | None
    events: int
    events_detected: int


def score_file(source: Path, out: TextIO) -> Report:
    """Score ``source`` into ``out``. A header may start with a byte-order mark (as spreadsheets write)."""
    with source.open(newline="", encoding="utf-8-sig") as handle:
        scored = list(detect(read_rows(handle)))
    writer = csv.writer(out)
    labelled = bool(scored) and scored[0].row.label is not None
    writer.writerow(["timestamp", "value", "score", "anomaly", *(["label"] if labelled else [])])
    for item in scored:
        writer.writerow([item.row.timestamp.isoformat(), item.row.value, item.score, item.anomaly,
                         *([item.row.label] if labelled else [])])
    flagged = sum(s.anomaly for s in scored)
    if not labelled:
        return Report(len(scored), flagged, None, None, 0, 0)
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
                  true_positive / positives if positives else None, events, detected)
