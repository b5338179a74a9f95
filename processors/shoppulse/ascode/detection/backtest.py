"""``shoppulse backtest``: the sidecar's detection replayed over history in ClickHouse, for a grid of
sensitivities, and the sensitivity per country and metric it proposes (``detection/sensitivity.yaml``).

The sidecar itself runs over the history (``Sidecar`` replaying: it reads the final windows and the
seasonal bands as it does live, and writes nothing). For every series and every candidate ``open_z``
a shadow ``RegionTracker`` decides, from the same verdicts, the regions that candidate would open.
The detectors learn as a sidecar running the current sensitivity file does (an open region stops its
series learning), so a candidate far from the current value is judged approximately: backtest again
after a retune to confirm it. The first ``warm_up`` of the history only teaches the detectors. The
known events of ``detection/calendar.yaml`` are left unjudged as the sidecar leaves them.

Labels (``--labels``) are the incidents the history holds, one JSON object per line as
``shoppulse loadgen --ground-truth`` writes them: ``start`` and ``end`` (ISO 8601), ``countries`` and,
optionally, ``metrics`` (default: every metric). A region opened on a labelled series between
``MARGIN`` before its start and ``MARGIN`` after its end finds that incident, with a delay from its
start; a region opened in a country (or store-wide, ``ALL``) while none of its incidents was under
way is a false alert. A region on another metric of a country during its incident is neither.

The choice, country by country (the store-wide series as one more country): every series starts at
its current value; one lowers to the least sensitive lower candidate that finds more of its labelled
incidents; then, while the country has more false alerts per day than the budget, the series whose
next higher candidate removes false alerts is raised — first those that lose no found incident, then
the one removing the most.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from clickhouse_connect.driver.client import Client

from shoppulse.sidecar.app import READ_BATCH_STEPS, STEP_S, Sidecar
from shoppulse.sidecar.detectors import Verdict
from shoppulse.sidecar.event_calendar import Calendar
from shoppulse.sidecar.regions import RegionTracker
from shoppulse.sidecar.sensitivity import MAX_OPEN_Z, MIN_OPEN_Z, SERIES_COUNTRIES, Sensitivity
from shoppulse.sidecar.signals import GLOBAL, METRICS, as_utc, watermark

MARGIN = timedelta(minutes=2)  # a region this close to an incident belongs to it
DEFAULT_GRID = (3.0, 3.5, 4.0, 5.0, 6.0, 8.0)
DAY = timedelta(days=1)

Series = tuple[str, str]  # (metric, country)


class BacktestError(ValueError):
    """The backtest cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class Label:
    """One incident of the history."""

    start: datetime
    end: datetime
    countries: frozenset[str]
    metrics: frozenset[str]

    def touches(self, country: str) -> bool:
        return country == GLOBAL or country in self.countries

    def covers(self, metric: str, country: str) -> bool:
        return self.touches(country) and metric in self.metrics

    def around(self, at: datetime) -> bool:
        return self.start - MARGIN <= at <= self.end + MARGIN


def read_labels(path: Path) -> list[Label]:
    """The incidents of a JSONL file (``shoppulse loadgen --ground-truth``'s layout)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BacktestError(f"cannot read the labels {path}: {exc}") from None
    labels = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BacktestError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(entry, dict):
            raise BacktestError(f"{where}: expected an object with start, end and countries")
        labels.append(_label(entry, where))
    return labels


def _label(entry: dict[str, object], where: str) -> Label:
    moments = []
    for key in ("start", "end"):
        text = entry.get(key)
        try:
            moment = datetime.fromisoformat(str(text))
        except ValueError:
            raise BacktestError(f"{where}: {key} {text!r} is not an ISO 8601 time such as "
                                "2026-11-23T12:00:00+00:00") from None
        if moment.tzinfo is None:
            raise BacktestError(f"{where}: {key} {text!r} has no time zone: add +00:00 for UTC")
        moments.append(as_utc(moment))
    start, end = moments
    if end <= start:
        raise BacktestError(f"{where}: end {end.isoformat()} is not after start {start.isoformat()}")
    countries, metrics = entry.get("countries"), entry.get("metrics") or list(METRICS)
    if not isinstance(countries, list) or not countries or not all(c in SERIES_COUNTRIES for c in countries):
        raise BacktestError(f"{where}: countries must be a list of the store's countries "
                            f"({', '.join(SERIES_COUNTRIES)}), found {countries!r}")
    if not isinstance(metrics, list) or not all(m in METRICS for m in metrics):
        raise BacktestError(f"{where}: metrics must be a list of the sidecar's metrics ({', '.join(METRICS)}), "
                            f"found {metrics!r}")
    return Label(start, end, frozenset(map(str, countries)), frozenset(map(str, metrics)))


@dataclass(frozen=True)
class Outcome:
    """What one candidate open_z does on one series."""

    found: Mapping[int, float]  # label index -> delay in seconds from its start (0 when opened before it)
    false_alerts: int


@dataclass
class Replay:
    """The sidecar replayed over ``[start, end)`` with one shadow tracker per candidate for each series."""

    client: Client
    grid: Sequence[float]
    sensitivity: Sensitivity
    scored_from: datetime  # regions opened before this (the warm-up) are not counted
    calendar: Calendar = field(default_factory=Calendar)  # the known events, whose volumes are not judged
    openings: dict[tuple[str, str, float], list[datetime]] = field(default_factory=lambda: defaultdict(list))
    shadows: dict[Series, dict[float, RegionTracker]] = field(default_factory=dict)

    def observe(self, at: datetime, metric: str, country: str, value: float, verdict: Verdict) -> None:
        trackers = self.shadows.get((metric, country))
        if trackers is None:
            trackers = {z: RegionTracker(metric, country, open_z=z) for z in self.grid}
            self.shadows[(metric, country)] = trackers
        for open_z, tracker in trackers.items():
            change = tracker.step(at, value, verdict)
            if change is not None and change.kind == "opened" and at >= self.scored_from:
                self.openings[(metric, country, open_z)].append(at)

    def run(self, start: datetime, end: datetime, progress: Callable[[int, int], None] = lambda _d, _t: None) -> None:
        sidecar = Sidecar(self.client, replaying=True, on_verdict=self.observe, deciding_only=True,
                          calendar=self.calendar)
        sidecar.retune(self.sensitivity)
        sidecar.last_step = start
        total = int((end - start).total_seconds()) // STEP_S
        chunk = timedelta(seconds=STEP_S * READ_BATCH_STEPS)
        done = 0
        while sidecar.last_step + timedelta(seconds=STEP_S) <= end:
            done += sidecar.score_until(min(end, sidecar.last_step + chunk))
            progress(done, total)


def outcomes(openings: Mapping[tuple[str, str, float], list[datetime]], series: Iterable[Series],
             grid: Sequence[float], labels: Sequence[Label]) -> dict[Series, dict[float, Outcome]]:
    """Every series' outcome at every candidate."""
    result: dict[Series, dict[float, Outcome]] = {}
    for metric, country in series:
        by_z = {}
        for open_z in grid:
            found: dict[int, float] = {}
            false_alerts = 0
            for at in openings.get((metric, country, open_z), []):
                near = [i for i, label in enumerate(labels) if label.touches(country) and label.around(at)]
                if not near:
                    false_alerts += 1
                for i in near:
                    if labels[i].covers(metric, country) and i not in found:
                        found[i] = max(0.0, (at - labels[i].start).total_seconds())
            by_z[open_z] = Outcome(found, false_alerts)
        result[(metric, country)] = by_z
    return result


def nearest(grid: Sequence[float], value: float) -> float:
    return min(grid, key=lambda z: (abs(z - value), z))


def choose(results: Mapping[Series, Mapping[float, Outcome]], grid: Sequence[float], current: Sensitivity,
           days: float, budget_per_day: float) -> dict[Series, float]:
    """Each series' open_z (see the module's docstring for the rule)."""
    ordered = sorted(grid)
    chosen = {s: nearest(ordered, current.open_z(*s)) for s in results}
    for series, by_z in results.items():
        here = len(by_z[chosen[series]].found)
        better = [z for z in ordered if z < chosen[series] and len(by_z[z].found) > here]
        if better:
            most = max(len(by_z[z].found) for z in better)
            chosen[series] = max(z for z in better if len(by_z[z].found) == most)
    for country in {c for _, c in results}:
        mine = [s for s in results if s[1] == country]
        while sum(results[s][chosen[s]].false_alerts for s in mine) > budget_per_day * days:
            moves = []
            for series in mine:
                now = results[series][chosen[series]]
                fewer = [z for z in ordered
                         if z > chosen[series] and results[series][z].false_alerts < now.false_alerts]
                if fewer:
                    then = results[series][fewer[0]]
                    lost = len(now.found) - len(then.found)
                    moves.append((lost > 0, lost, -(now.false_alerts - then.false_alerts), series, fewer[0]))
            if not moves:
                break
            *_, series, open_z = min(moves)
            chosen[series] = open_z
    return chosen


@dataclass(frozen=True)
class Summary:
    """A configuration's detection over the history: labelled (country, incident) pairs found, their
    delays, and false alerts per country-day."""

    pairs: int
    found: int
    delays: tuple[float, ...]
    false_alerts: int
    country_days: float

    @property
    def median_delay_s(self) -> float | None:
        return statistics.median(self.delays) if self.delays else None

    @property
    def false_per_country_day(self) -> float:
        return self.false_alerts / self.country_days if self.country_days else 0.0


def summary(results: Mapping[Series, Mapping[float, Outcome]], config: Callable[[Series], float],
           labels: Sequence[Label], days: float, countries: Iterable[str] | None = None) -> Summary:
    """``config``'s totals over ``countries`` (default: every country of the results): an incident is
    found in a country when any of its series finds it, after the smallest delay among them."""
    wanted = set(countries) if countries is not None else {c for _, c in results}
    pairs = found = false_alerts = 0
    delays = []
    for country in sorted(wanted):
        mine = [s for s in results if s[1] == country]
        outcomes_here = [results[s][config(s)] for s in mine]
        false_alerts += sum(o.false_alerts for o in outcomes_here)
        for index, label in enumerate(labels):
            if not label.touches(country) or not any(label.covers(m, country) for m, _ in mine):
                continue
            pairs += 1
            seen = [o.found[index] for o in outcomes_here if index in o.found]
            if seen:
                found += 1
                delays.append(min(seen))
    return Summary(pairs, found, tuple(delays), false_alerts, days * len(wanted))


@dataclass(frozen=True)
class BacktestReport:
    start: datetime  # the first step scored for regions (after the warm-up)
    end: datetime
    labels: int
    uniform: dict[float, Summary]  # every series at one candidate
    current: Summary
    chosen: Summary
    by_country: dict[str, tuple[Summary, Summary]]  # country -> (current, chosen)
    changes: dict[Series, tuple[float, float]]  # series -> (current, chosen) where they differ
    proposed: Sensitivity

    @property
    def days(self) -> float:
        return (self.end - self.start) / DAY


def everywhere(open_z: float) -> Callable[[Series], float]:
    return lambda _series: open_z


def history_span(client: Client, days: float, warm_up: timedelta) -> tuple[datetime, datetime]:
    """The steps to replay: the last ``days`` (and the warm-up before them) of final data, as far as it goes."""
    newest = watermark(client)
    rows = client.query("SELECT min(ts) FROM metrics_1s").result_rows
    if newest is None or not rows or not isinstance(rows[0][0], datetime) or rows[0][0].year <= 1970:
        raise BacktestError("metrics_1s holds no final data to backtest on: run the pipeline (shoppulse up) or "
                            "backfill history (shoppulse loadgen --replay DAYS)")
    oldest = as_utc(rows[0][0])
    end = newest - timedelta(seconds=newest.timestamp() % STEP_S)
    start = max(end - timedelta(days=days) - warm_up, oldest)
    start -= timedelta(seconds=start.timestamp() % STEP_S)
    if end - start <= warm_up:
        raise BacktestError(f"only {(end - start) / timedelta(minutes=1):.0f} minutes of history, no more than the "
                            f"{warm_up / timedelta(minutes=1):.0f}-minute warm-up: let the pipeline run longer or "
                            "shorten --warm-up")
    return start, end


def backtest(client: Client, days: float, labels: Sequence[Label], current: Sensitivity,
             grid: Sequence[float] = DEFAULT_GRID, budget_per_day: float = 1.0,
             warm_up: timedelta = timedelta(minutes=30),
             progress: Callable[[int, int], None] = lambda _d, _t: None,
             calendar: Calendar | None = None) -> BacktestReport:
    if not grid or any(not MIN_OPEN_Z <= z <= MAX_OPEN_Z for z in grid):
        raise BacktestError(f"every candidate open_z must lie within {MIN_OPEN_Z} to {MAX_OPEN_Z}, got {list(grid)}")
    grid = tuple(sorted(set(grid)))
    start, end = history_span(client, days, warm_up)
    replay = Replay(client, grid, current, start + warm_up, calendar=calendar or Calendar())
    replay.run(start, end, progress)
    span_days = (end - replay.scored_from) / DAY
    results = outcomes(replay.openings, replay.shadows, grid, labels)
    chosen = choose(results, grid, current, span_days, budget_per_day)
    now = {s: nearest(grid, current.open_z(*s)) for s in results}
    countries = sorted({c for _, c in results}, key=lambda c: (c == GLOBAL, c))
    changes = {s: (current.open_z(*s), z) for s, z in sorted(chosen.items()) if z != now[s]}
    by_series = {s: z for s, z in current.by_series.items() if s not in results}  # series the history lacks
    by_series.update({s: z for s, z in chosen.items() if z != current.default})
    return BacktestReport(
        replay.scored_from, end, len(labels),
        {z: summary(results, everywhere(z), labels, span_days) for z in grid},
        summary(results, now.__getitem__, labels, span_days),
        summary(results, chosen.__getitem__, labels, span_days),
        {c: (summary(results, now.__getitem__, labels, span_days, [c]),
             summary(results, chosen.__getitem__, labels, span_days, [c])) for c in countries},
        changes, Sensitivity(current.default, by_series))
