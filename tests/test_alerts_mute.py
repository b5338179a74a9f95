"""Mute timings as Grafana's Alertmanager reads and applies them: the interval fields (times with an
exclusive end, weekdays in Go's numbering, days of the month from either end, months, years, a time
zone), what its parser refuses, and the shipped weekly maintenance holding the pipeline team's
notifications back until it ends while the store's go out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shoppulse.ascode.alerting.files import alerting_paths, load
from shoppulse.ascode.alerting.mute import MuteTimingError, TimeInterval
from shoppulse.ascode.alerting.notify import Alert, dispatch, policy_tree

SUNDAY_0230 = datetime(2026, 12, 6, 2, 30, tzinfo=UTC)  # a Sunday


def test_an_interval_matches_when_every_field_it_sets_matches() -> None:
    maintenance = TimeInterval.parse({"weekdays": ["sunday"], "times": [{"start_time": "02:00", "end_time": "04:00"}]})
    assert maintenance.contains(SUNDAY_0230)
    assert not maintenance.contains(SUNDAY_0230.replace(hour=4, minute=0))  # the end is exclusive
    assert not maintenance.contains(SUNDAY_0230 + timedelta(days=1))
    weekdays = TimeInterval.parse({"weekdays": ["monday:friday"], "location": "Europe/Berlin"})
    assert weekdays.contains(datetime(2026, 12, 4, 22, 59, tzinfo=UTC))  # Friday 23:59 in Berlin
    assert not weekdays.contains(datetime(2026, 12, 4, 23, 0, tzinfo=UTC))  # Saturday 00:00 in Berlin
    last_day = TimeInterval.parse({"days_of_month": ["-1"], "months": ["february"], "years": ["2028:2030"]})
    assert last_day.contains(datetime(2028, 2, 29, 12, tzinfo=UTC)) and not last_day.contains(
        datetime(2028, 2, 28, 12, tzinfo=UTC))
    assert not last_day.contains(datetime(2027, 2, 28, 12, tzinfo=UTC))  # the year is outside


@pytest.mark.parametrize(("interval", "says"), [
    ({"times": [{"start_time": "25:00", "end_time": "26:00"}]}, "past 24:00"),
    ({"times": [{"start_time": "04:00", "end_time": "02:00"}]}, "is not before"),
    ({"times": [{"start_time": "4am", "end_time": "05:00"}]}, "is not HH:MM"),
    ({"weekdays": ["funday"]}, "weekdays: 'funday'"),
    ({"weekdays": ["saturday:monday"]}, "runs backwards"),
    ({"location": "Mars/Olympus"}, "not an IANA time zone"),
])
def test_what_alertmanager_refuses_is_refused(interval: dict, says: str) -> None:
    with pytest.raises(MuteTimingError, match=says):
        TimeInterval.parse(interval)


def test_the_weekly_maintenance_holds_the_pipeline_s_pages_until_it_ends() -> None:
    tree = policy_tree(load(alerting_paths()))
    assert tree is not None
    pipeline = Alert(frozenset({"alertname": "Pipeline process down", "grafana_folder": "shoppulse",
                                "team": "pipeline", "severity": "warning"}.items()), SUNDAY_0230, None)
    store = Alert(frozenset({"alertname": "Orders below the expected band", "grafana_folder": "shoppulse",
                             "team": "store", "severity": "warning", "country": "DE"}.items()), SUNDAY_0230, None)
    sent = dispatch(tree, [pipeline, store], SUNDAY_0230 + timedelta(hours=3))
    first = {dict(next(iter(n.firing)))["alertname"]: n.at for n in reversed(sent)}
    assert first["Orders below the expected band"] - SUNDAY_0230 < timedelta(minutes=1)
    held = first["Pipeline process down"]
    assert SUNDAY_0230.replace(hour=4, minute=0) <= held < SUNDAY_0230.replace(hour=4, minute=10), held
