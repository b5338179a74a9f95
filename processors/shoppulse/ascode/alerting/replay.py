"""``shoppulse alerts replay``: every rule evaluated at each of its group's evaluation times over a
recorded run, with Grafana's alert-state rules (pending for ``for``, then firing; resolved when the
condition no longer holds; no-data and error states as each rule chooses), so thresholds are tuned
on data. Prometheus rules are not replayed (the run has no Prometheus history); lint checks them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shoppulse.ascode.alerting.evaluate import Evaluation, NotEvaluableError, RuleEvaluator
from shoppulse.ascode.alerting.expressions import Labels
from shoppulse.ascode.alerting.files import AlertingFiles, parse_duration

NO_DATA = frozenset({("alertname", "DatasourceNoData")})
ERROR = frozenset({("alertname", "DatasourceError")})
MISSING_EVALS_TO_RESOLVE = 2  # Grafana's default: a series gone for two evaluations is resolved


def duration(text: object, default: timedelta) -> timedelta:
    """A rule's or group's duration; ``default`` where it has none (lint reports a malformed one)."""
    return parse_duration(text) or default


@dataclass
class Firing:
    labels: Labels
    fired_at: datetime
    resolved_at: datetime | None = None

    def covers(self, start: datetime, end: datetime) -> bool:
        """Whether it fired at some moment within [start, end]."""
        return self.fired_at <= end and (self.resolved_at is None or self.resolved_at >= start)


@dataclass
class RuleReplay:
    uid: str
    title: str
    evaluations: int = 0
    firings: list[Firing] = field(default_factory=list)
    errors: list[tuple[datetime, str]] = field(default_factory=list)
    skipped: str | None = None


@dataclass
class _Instance:
    pending_since: datetime
    firing: Firing | None = None
    missing: int = 0


class RuleStates:
    """Grafana's per-instance states for one rule: Normal -> Pending -> Firing -> Normal."""

    def __init__(self, rule: dict[str, Any], replay: RuleReplay) -> None:
        self.rule = rule
        self.replay = replay
        self.pending_for = duration(rule.get("for"), timedelta(0))
        self.instances: dict[Labels, _Instance] = {}

    def step(self, evaluation: Evaluation) -> None:
        at = evaluation.at
        true: set[Labels] | None = set(evaluation.true)
        if evaluation.error is not None:
            self.replay.errors.append((at, evaluation.error))
            true = self._special(self.rule.get("execErrState"), ERROR)
        elif evaluation.no_data:
            true = self._special(self.rule.get("noDataState"), NO_DATA)
        if true is None:  # KeepLast: the instances stay as they are
            return
        for labels in true:
            instance = self.instances.setdefault(labels, _Instance(at))
            instance.missing = 0
            if instance.firing is None and at - instance.pending_since >= self.pending_for:
                instance.firing = Firing(labels, at)
                self.replay.firings.append(instance.firing)
        for labels in list(self.instances):
            if labels in true:
                continue
            instance = self.instances[labels]
            instance.missing += 1
            missing_series = labels not in evaluation.values.get(str(self.rule.get("condition")), {})
            if missing_series and instance.missing < MISSING_EVALS_TO_RESOLVE and instance.firing is not None:
                continue
            if instance.firing is not None:
                instance.firing.resolved_at = at
            del self.instances[labels]

    def _special(self, state: Any, labels: Labels) -> set[Labels] | None:
        """What a no-data or error evaluation means for this rule."""
        if state == "KeepLast":
            return None
        if state in ("Alerting",):
            return {frozenset()}
        if state in ("NoData", "Error"):
            return {labels}
        return set()  # OK


def evaluation_times(start: datetime, end: datetime, interval: timedelta) -> list[datetime]:
    """The group's evaluation moments within [start, end], aligned to its interval like Grafana's scheduler."""
    step = interval.total_seconds()
    first = datetime.fromtimestamp((start.timestamp() // step + 1) * step, start.tzinfo)
    times, at = [], first
    while at <= end:
        times.append(at)
        at += interval
    return times


def replay(files: AlertingFiles, evaluator: RuleEvaluator, start: datetime, end: datetime,
           progress: Callable[[str], None] = lambda _: None) -> list[RuleReplay]:
    results: list[RuleReplay] = []
    for located in files.rules():
        rule, group = located.item, located.parent
        result = RuleReplay(str(rule.get("uid")), str(rule.get("title")))
        results.append(result)
        states = RuleStates(rule, result)
        progress(f"replaying {result.title}")
        for at in evaluation_times(start, end, duration(group.get("interval"), timedelta(minutes=1))):
            try:
                evaluation = evaluator.evaluate(rule, at)
            except NotEvaluableError as exc:
                result.skipped = str(exc)
                break
            result.evaluations += 1
            states.step(evaluation)
    return results


def offset(moment: datetime, origin: datetime) -> str:
    """``moment`` as minutes and seconds after (or before) ``origin``: +12m30s."""
    seconds = int((moment - origin).total_seconds())
    sign = "-" if seconds < 0 else "+"
    minutes, rest = divmod(abs(seconds), 60)
    return f"{sign}{minutes}m{rest:02d}s"


def describe(labels: Labels) -> str:
    shown = {k: v for k, v in sorted(labels) if k != "insight"}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "(no labels)"


def report_lines(results: list[RuleReplay], origin: datetime) -> list[str]:
    """Per rule, when each instance fired and resolved, as offsets from the run's scenario start."""
    lines = []
    for result in results:
        if result.skipped:
            lines.append(f"{result.title} [{result.uid}]: not replayed: {result.skipped}")
            continue
        lines.append(f"{result.title} [{result.uid}]: {len(result.firings)} firing(s) in {result.evaluations} "
                     f"evaluations{f', {len(result.errors)} errors' if result.errors else ''}")
        for firing in result.firings:
            resolved = offset(firing.resolved_at, origin) if firing.resolved_at else "still firing"
            lines.append(f"  {describe(firing.labels)}: fired {offset(firing.fired_at, origin)}, "
                         f"resolved {resolved}")
        for at, error in result.errors[:3]:
            lines.append(f"  error at {offset(at, origin)}: {error}")
    return lines


REPLAY_AFTER_MINUTES = 15  # a recorded run's first minutes warm the sidecar's baselines up: not replayed


def fixed_week_time(now: datetime) -> datetime:
    """The latest Tuesday 11:00 UTC at least a day ago: every replay plays the same hours of the
    store's week (traffic follows each country's local time of day), whenever it runs; at that hour
    every market with a scripted incident is awake (Tokyo's evening, Europe's lunch, US morning)."""
    moment = (now - timedelta(days=1)).replace(hour=11, minute=0, second=0, microsecond=0)
    while moment.weekday() != 1 or moment > now - timedelta(days=1):
        moment -= timedelta(days=1)
    return moment


def parse_moment(text: str, now: datetime) -> datetime:
    """``now``, ``now-<duration>`` (Grafana's relative time, e.g. now-2h) or an ISO 8601 time (UTC if no
    offset is given)."""
    text = text.strip()
    if text == "now":
        return now
    if text.startswith("now-"):
        ago = parse_duration(text[4:])
        if ago is None:
            raise ValueError(f"{text!r}: after now- comes a duration such as 90m, 2h or 1d")
        return now - ago
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither now, now-<duration> nor an ISO 8601 time "
                         "(2026-11-24T11:00:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
