"""``shoppulse backtest``: the detection's sensitivity, tuned on history and kept as a reviewed file;
``shoppulse calendar``: the known events the sidecar leaves unjudged, checked and shown."""

from __future__ import annotations

import difflib
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shoppulse.cli.common import app, clickhouse_failed, console, err, fail, settings_or_fail
from shoppulse.topics import HISTORY_DAYS

if TYPE_CHECKING:
    from shoppulse.ascode.detection.backtest import BacktestReport, Summary
    from shoppulse.sidecar.event_calendar import Calendar


def _grid(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"--open-z {text!r}: give numbers separated by commas, such as 3,4,5,6,8", 2)


def _delay(summary: Summary) -> str:
    median = summary.median_delay_s
    return "-" if median is None else f"{median:.0f} s"


def _found(summary: Summary) -> str:
    return f"{summary.found}/{summary.pairs}" if summary.pairs else "-"


def _print_report(report: BacktestReport) -> None:
    from rich.table import Table

    console.print(f"backtest of {report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC "
                  f"({report.days:.2f} days after the warm-up), {len(report.by_country)} countries with ALL, "
                  f"{report.labels} labelled incident(s)", highlight=False)
    grid = Table("open_z", "incidents found (country, incident)", "median delay", "false alerts per country-day",
                 title="every series at one sensitivity")
    for open_z, summary in report.uniform.items():
        grid.add_row(f"{open_z:g}", _found(summary), _delay(summary), f"{summary.false_per_country_day:.2f}")
    grid.add_row("the file now", _found(report.current), _delay(report.current),
                 f"{report.current.false_per_country_day:.2f}")
    grid.add_row("proposed", _found(report.chosen), _delay(report.chosen),
                 f"{report.chosen.false_per_country_day:.2f}", style="bold")
    console.print(grid)
    countries = Table("country", "found now", "found proposed", "false/day now", "false/day proposed",
                      title="per country")
    for country, (now, proposed) in report.by_country.items():
        countries.add_row(country, _found(now), _found(proposed), f"{now.false_per_country_day:.2f}",
                          f"{proposed.false_per_country_day:.2f}")
    console.print(countries)
    for (metric, country), (before, after) in report.changes.items():
        console.print(f"{country} {metric}: open_z {before:g} -> {after:g}", highlight=False)
    if not report.changes:
        console.print("no series changes sensitivity", highlight=False)


@app.command()
def backtest(
    days: Annotated[float, typer.Option(min=0.01, max=366, help="Days of history to replay, as far as "
                                                                f"metrics_1s reaches (it keeps {HISTORY_DAYS + 1})."
                                                                )] = HISTORY_DAYS,
    labels: Annotated[Path | None, typer.Option(help="JSONL of the incidents the history holds (start, end, "
                                                     "countries, optional metrics), as `shoppulse loadgen "
                                                     "--ground-truth` writes it. Without it every region is a "
                                                     "false alert.")] = None,
    open_z: Annotated[str, typer.Option(help="Candidate sensitivities (the |z| that opens a region).")]
    = "3,3.5,4,5,6,8",
    false_per_day: Annotated[float, typer.Option(min=0, max=1000, help="False alerts per country-day to "
                                                                       "tune down to.")] = 1.0,
    warm_up_minutes: Annotated[float, typer.Option("--warm-up", min=1, max=1440,
                                                   help="Minutes of history that only teach the detectors.")] = 30,
    write: Annotated[bool, typer.Option("--write", help="Write the proposal to detection/sensitivity.yaml "
                                                        "(shown as a diff).")] = False,
) -> None:
    """Replay the sidecar's detection over history in ClickHouse for a grid of sensitivities: detection
    delay, incidents found and false alerts per country-day; propose a sensitivity per country and metric.
    The known events of detection/calendar.yaml are not judged, as the sidecar leaves them."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from shoppulse import clickhouse
    from shoppulse.ascode.detection.backtest import BacktestError, backtest, read_labels
    from shoppulse.sidecar.event_calendar import calendar_path, load_calendar
    from shoppulse.sidecar.reviewed_file import ReviewedFileError
    from shoppulse.sidecar.sensitivity import (
        load_sensitivity,
        sensitivity_path,
        write_sensitivity,
    )

    settings = settings_or_fail()
    path = sensitivity_path()
    try:
        current = load_sensitivity(path)
        calendar = load_calendar(calendar_path())
        incidents = read_labels(labels) if labels is not None else []
    except (ReviewedFileError, BacktestError) as exc:
        fail(str(exc), 2)
    client = clickhouse.connect(settings)
    try:
        with Progress(TextColumn("replaying detection"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                      TimeRemainingColumn(), console=err) as bar:
            task = bar.add_task("backtest", total=None)
            report = backtest(client, days, incidents, current, _grid(open_z), false_per_day,
                              timedelta(minutes=warm_up_minutes),
                              lambda done, total: bar.update(task, completed=done, total=total), calendar)
    except BacktestError as exc:
        fail(str(exc), 2)
    finally:
        client.close()
    _print_report(report)
    before, after = current.as_yaml(), report.proposed.as_yaml()
    if not write:
        console.print(f"run again with --write to write {path}" if before != after else f"{path} stays as it is",
                      highlight=False)
        return
    if before == after and path.is_file():
        console.print(f"{path} is already what the backtest proposes", highlight=False)
        return
    try:
        write_sensitivity(path, report.proposed)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc} (set SHOPPULSE_HOME to your as-code repository)", 1)
    name = f"{path.parent.name}/{path.name}"
    for line in difflib.unified_diff(before.splitlines(), after.splitlines(), f"a/{name}", f"b/{name}", lineterm=""):
        console.print(line, highlight=False, markup=False)
    console.print(f"wrote {path}; the sidecar applies it when it sees the file change", highlight=False)


@app.command()
def calendar(
    file: Annotated[Path | None, typer.Option(help="The calendar to read (default: detection/calendar.yaml of the "
                                                   "as-code home).")] = None,
    days: Annotated[float, typer.Option(min=0, max=3660, help="Show the events under way and those that begin "
                                                              "within this many days.")] = 30,
    applied: Annotated[bool, typer.Option("--applied", help="Also say whether the sidecar has applied this "
                                                            "calendar (asks ClickHouse); exit 1 when it has not "
                                                            "yet.")] = False,
) -> None:
    """Check the calendar of known events (holidays, campaigns) as the sidecar reads it, iCalendar files
    included, and show the events under way and coming: while one lasts, its countries' volumes are not
    judged (or only beyond the level it may take them to). Exits 2 on a calendar the sidecar would refuse."""
    from datetime import UTC, datetime

    from rich.table import Table

    from shoppulse.sidecar.event_calendar import CalendarError, calendar_path, load_calendar

    path = file or calendar_path()
    if file is not None and not file.is_file():
        fail(f"{file}: no such file", 2)
    try:
        known = load_calendar(path)
    except CalendarError as exc:
        fail(str(exc), 2)
    now = datetime.now(UTC)
    horizon = now + timedelta(days=days)
    shown = sorted((e for e in known.events if e.end > now and e.start <= horizon), key=lambda e: e.start)
    table = Table("event", "kind", "countries", "starts (UTC)", "ends (UTC)", "volumes judged",
                  title=f"under way or beginning within {days:g} days")
    for event in shown:
        table.add_row(event.name, event.kind, ", ".join(event.countries or ["every country"]),
                      f"{event.start.astimezone(UTC):%Y-%m-%d %H:%M}", f"{event.end.astimezone(UTC):%Y-%m-%d %H:%M}",
                      "no" if event.level is None else f"beyond {event.level:g}x the usual")
    if shown:
        console.print(table)
    console.print(f"{path}: {len(known.events)} known event(s), {len(shown)} under way or within {days:g} days",
                  highlight=False)
    if applied:
        _say_applied(known)


def _say_applied(known: Calendar) -> None:
    """Whether the sidecar's calendar in force (calendar_loads) is this one; exit 1 when it is not."""
    from clickhouse_connect.driver.exceptions import Error as ClickHouseError

    from shoppulse import clickhouse
    from shoppulse.sidecar.calendar_table import calendar_version, in_force

    settings = settings_or_fail()
    try:
        latest = in_force(clickhouse.connect(settings))
    except ClickHouseError as exc:
        clickhouse_failed(settings.clickhouse_http_url, exc)
    version = calendar_version(known)
    if latest is not None and latest[0] == version:
        console.print(f"applied by the sidecar at {latest[1]:%Y-%m-%d %H:%M:%S} UTC (version {version})",
                      highlight=False)
        return
    in_use = "none yet" if latest is None else f"version {latest[0]}, applied at {latest[1]:%Y-%m-%d %H:%M:%S} UTC"
    fail(f"not applied yet: this calendar is version {version}; the sidecar's in force is {in_use} (it rereads "
         "the file within a second of a change: is it running, and reading this file?)")
