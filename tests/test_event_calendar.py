"""detection/calendar.yaml: known events parsed strictly, reread by the sidecar when the file changes (a
broken edit keeps the calendar in use), refused at start; while an event lasts its countries' volumes are
not judged nor learned from, and their ratios are judged as always."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import pytest
from clickhouse_connect.driver.client import Client

from checkout import ROOT
from conftest import EndpointProcess
from shoppulse.ascode.dashboards.demo_data import poisson
from shoppulse.devstack.process import ManagedProcess, free_port, tail, wait_until
from shoppulse.grafana.interpolate import QueryContext, clickhouse_query
from shoppulse.grafana.shapes import Result, shape_problems
from shoppulse.settings import Settings
from shoppulse.sidecar import calendar_table, event_calendar, main
from shoppulse.sidecar.app import Sidecar, replan
from shoppulse.sidecar.detectors import Point
from shoppulse.sidecar.event_calendar import Calendar, CalendarError, KnownEvent, load_calendar, parse_calendar
from shoppulse.sidecar.reviewed_file import FileWatch
from shoppulse.streaming import ProcessorStartError

# The module's own example: Golden Week in JP, and a campaign e-mail for the whole store.
GOLDEN_WEEK = textwrap.dedent(event_calendar.__doc__.split("::\n\n", 1)[1].split("\n\n", 1)[0]) + "\n"  # type: ignore[union-attr]


def test_the_shipped_file_is_valid_and_its_example_too() -> None:
    shipped = ROOT / "detection" / "calendar.yaml"
    assert load_calendar(shipped).events == ()
    example = "\n".join(line.removeprefix("# ") for line in shipped.read_text().splitlines()
                        if line.startswith("# ") and (line.startswith("#  ") or "events:" in line))
    assert len(parse_calendar(example, "example").events) == 2, example


def test_an_event_covers_its_countries_for_its_hours_and_the_store_wide_series_only_when_it_is_everywhere() -> None:
    calendar = parse_calendar(GOLDEN_WEEK, "calendar.yaml")
    golden, friday = calendar.events
    first_day = datetime(2026, 4, 28, 15, tzinfo=UTC)  # JP's midnight
    assert calendar.events_of("JP", first_day, first_day) == [golden]
    assert calendar.events_of("JP", first_day - timedelta(seconds=60), first_day - timedelta(seconds=1)) == []
    assert calendar.events_of("JP", first_day - timedelta(seconds=30), first_day + timedelta(seconds=30)) == [golden]
    assert calendar.events_of("DE", first_day, first_day) == calendar.events_of("ALL", first_day, first_day) == []
    last = datetime(2026, 5, 6, 15, tzinfo=UTC)
    assert calendar.events_of("JP", last - timedelta(seconds=1), last - timedelta(seconds=1)) == [golden]
    assert calendar.events_of("JP", last, last + timedelta(seconds=60)) == []
    black_friday = datetime(2026, 11, 27, 12, tzinfo=UTC)
    assert [calendar.events_of(c, black_friday, black_friday) for c in ("US", "JP", "ALL")] == [[friday]] * 3
    assert parse_calendar(calendar.as_yaml(), "again") == calendar


@pytest.mark.parametrize(("text", "message"), [
    ("events: [", "is not valid YAML"),
    ("- name: x", "expected a mapping with a list of events, found a list"),
    ("events:\n  - name: x\n    kind: holiday\n    start: 2027-01-01T00:00:00\n    end: 2027-01-02T00:00:00+00:00\n",
     "events.0.start: Input should have timezone info"),
    ("events:\n  - name: x\n    kind: holiday\n    start: 2027-01-02T00:00:00Z\n    end: 2027-01-01T00:00:00Z\n",
     "events.0: Value error, 'x' ends at 2027-01-01T00:00:00+00:00, not after its start"),
    ("events:\n  - name: x\n    kind: holiday\n    start: 2027-01-01T00:00:00Z\n    end: 2027-03-01T00:00:00Z\n",
     "lasts longer than 31 days"),
    ("events:\n  - name: x\n    kind: sale\n    start: 2027-01-01T00:00:00Z\n    end: 2027-01-02T00:00:00Z\n",
     "events.0.kind: Input should be 'holiday' or 'campaign'"),
    ("events:\n  - name: x\n    kind: holiday\n    countries: [XX]\n    start: 2027-01-01T00:00:00Z\n"
     "    end: 2027-01-02T00:00:00Z\n", "events.0.countries.0: Input should be 'US'"),
    ("events:\n  - name: x\n    kind: holiday\n    countries: []\n    start: 2027-01-01T00:00:00Z\n"
     "    end: 2027-01-02T00:00:00Z\n", "events.0.countries: List should have at least 1 item"),
    ("events:\n  - name: x\n    kind: holiday\n    start: 2027-01-01T00:00:00Z\n    end: 2027-01-02T00:00:00Z\n"
     "    expect: 0.5\n", "events.0.expect: Extra inputs are not permitted"),
    ("events:\n  - name: x\n    kind: holiday\n    start: 2027-01-01T00:00:00Z\n    end: 2027-01-02T00:00:00Z\n"
     "    level: 0\n", "events.0.level: Input should be greater than or equal to 0.01"),
    ("events:\n  - kind: holiday\n    start: 2027-01-01T00:00:00Z\n    end: 2027-01-02T00:00:00Z\n",
     "events.0.name: Field required"),
    ("holidays: []", "holidays: Extra inputs are not permitted"),
])
def test_a_bad_file_is_refused_with_where_and_why(text: str, message: str) -> None:
    with pytest.raises(CalendarError) as raised:
        parse_calendar(text, "detection/calendar.yaml")
    assert message in str(raised.value) and str(raised.value).startswith("detection/calendar.yaml"), raised.value


JAPAN_ICS = """BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//example//holidays//EN\r
BEGIN:VEVENT\r
UID:showa-2027@example\r
DTSTART;VALUE=DATE:20270429\r
DTEND;VALUE=DATE:20270430\r
SUMMARY:Showa Day\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:sale@example\r
DTSTART;TZID=Europe/Berlin:20271126T070000\r
DURATION:PT17H\r
RRULE:FREQ=YEARLY;COUNT=3\r
EXDATE;TZID=Europe/Berlin:20281126T070000\r
SUMMARY:Autumn sale\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:floating@example\r
DTSTART:20270720T180000\r
DTEND:20270720T220000\r
SUMMARY:Fireworks\r
END:VEVENT\r
END:VCALENDAR\r
"""


def test_an_icalendar_files_events_join_the_calendar_all_day_ones_at_local_midnight(tmp_path: Path) -> None:
    (tmp_path / "holidays").mkdir()
    (tmp_path / "holidays" / "jp.ics").write_text(JAPAN_ICS)
    path = tmp_path / "calendar.yaml"
    path.write_text(GOLDEN_WEEK + "ical:\n  - file: holidays/jp.ics\n    countries: [JP]\n    timezone: Asia/Tokyo\n")
    calendar = load_calendar(path)
    told = [(e.name, e.kind, e.countries, e.start.astimezone(UTC), e.end - e.start) for e in calendar.events[2:]]
    tokyo_midnight = datetime(2027, 4, 28, 15, tzinfo=UTC)
    assert told == [
        ("Showa Day", "holiday", ["JP"], tokyo_midnight, timedelta(days=1)),
        ("Autumn sale", "holiday", ["JP"], datetime(2027, 11, 26, 6, tzinfo=UTC), timedelta(hours=17)),
        ("Autumn sale", "holiday", ["JP"], datetime(2029, 11, 26, 6, tzinfo=UTC), timedelta(hours=17)),  # 2028: EXDATE
        ("Fireworks", "holiday", ["JP"], datetime(2027, 7, 20, 9, tzinfo=UTC), timedelta(hours=4)),  # Tokyo's evening
    ]
    fireworks = datetime(2027, 7, 20, 10, tzinfo=UTC)
    assert [e.name for e in calendar.events_of("JP", fireworks, fireworks + timedelta(minutes=1))] == ["Fireworks"]
    assert calendar.events_of("DE", fireworks, fireworks + timedelta(minutes=1)) == []
    assert calendar.events_of("JP", tokyo_midnight - timedelta(minutes=2), tokyo_midnight - timedelta(minutes=1)) == []


@pytest.mark.parametrize(("ical", "ics", "message"), [
    ("file: missing.ics\n    timezone: UTC", None, "ical.0: cannot read"),
    ("file: jp.ics\n    timezone: Mars/Olympus", JAPAN_ICS,
     "ical.0.timezone: Value error, 'Mars/Olympus' is not a time zone"),
    ("file: jp.ics\n    timezone: UTC", "not a calendar", "ical.0: .*jp.ics is not an iCalendar file"),
    ("file: jp.ics\n    timezone: UTC", JAPAN_ICS.replace("DTEND;VALUE=DATE:20270430", "DTEND;VALUE=DATE:20270730"),
     "ical.0: .*jp.ics: event 'Showa Day': .*lasts longer than 31 days"),
    ("file: jp.ics\n    timezone: UTC\n    kind: festival", JAPAN_ICS, "ical.0.kind: Input should be"),
])
def test_a_bad_icalendar_source_is_refused_with_the_file_and_event(tmp_path: Path, ical: str, ics: str | None,
                                                                  message: str) -> None:
    if ics is not None:
        (tmp_path / "jp.ics").write_text(ics)
    path = tmp_path / "calendar.yaml"
    path.write_text(f"ical:\n  - {ical}\n")
    with pytest.raises(CalendarError, match=message):
        load_calendar(path)


def test_the_calendar_command_checks_the_file_and_shows_the_events_under_way_and_coming(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    (tmp_path / "jp.ics").write_text(JAPAN_ICS)
    path = tmp_path / "calendar.yaml"
    path.write_text("events:\n"
                    f"  - {{name: Spring sale, kind: campaign, countries: [GB], level: 2, "
                    f"start: '{now + timedelta(days=3)}', end: '{now + timedelta(days=4)}'}}\n"
                    f"  - {{name: Last week's e-mail, kind: campaign, start: '{now - timedelta(days=8)}', "
                    f"end: '{now - timedelta(days=7)}'}}\n"
                    f"  - {{name: Far away, kind: holiday, start: '{now + timedelta(days=90)}', "
                    f"end: '{now + timedelta(days=91)}'}}\n"
                    "ical:\n  - {file: jp.ics, countries: [JP], timezone: Asia/Tokyo}\n")
    shown = subprocess.run([sys.executable, "-m", "shoppulse", "calendar", "--file", str(path)], capture_output=True,
                           text=True, timeout=60, check=False, env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert "Spring sale" in shown.stdout and f"{now + timedelta(days=3):%Y-%m-%d %H:%M}" in shown.stdout
    assert "beyond 2x the usual" in shown.stdout
    assert "Last week" not in shown.stdout and "Far away" not in shown.stdout
    assert f"{path}: 7 known event(s), 1 under way or within 30 days" in " ".join(shown.stdout.split())
    path.write_text(path.read_text().replace("kind: holiday", "kind: fiesta"))
    refused = subprocess.run([sys.executable, "-m", "shoppulse", "calendar", "--file", str(path)],
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "events.2.kind: Input should be 'holiday' or 'campaign'" in refused.stderr


def test_the_sidecar_rereads_the_calendar_when_it_changes_and_keeps_it_when_broken(tmp_path: Path) -> None:
    path = tmp_path / "calendar.yaml"
    path.write_text(GOLDEN_WEEK)
    sidecar = Sidecar(cast(Client, None), replaying=True)
    watch = FileWatch(path, load_calendar)
    replan(sidecar, watch, starting=True)
    assert [e.name for e in sidecar.calendar.events] == ["Golden Week", "Black Friday e-mail"]
    path.write_text(GOLDEN_WEEK.replace("kind: campaign", "kind: promo"))  # a broken edit: kept out, logged
    os.utime(path, ns=(1, 1))
    replan(sidecar, watch)
    assert len(sidecar.calendar.events) == 2
    path.unlink()  # no file: no events
    replan(sidecar, watch)
    assert sidecar.calendar.events == ()
    path.write_text("events: [")
    with pytest.raises(CalendarError):  # at start a broken file stops the sidecar
        replan(Sidecar(cast(Client, None)), FileWatch(path, load_calendar), starting=True)


def test_the_read_that_checked_the_calendar_before_start_is_the_one_applied(tmp_path: Path) -> None:
    path = tmp_path / "calendar.yaml"
    path.write_text(GOLDEN_WEEK)
    reads: list[Path] = []
    watch = FileWatch(path, lambda p: reads.append(p) or load_calendar(p))
    checked = watch.current()  # the process refuses a broken file before it starts anything
    sidecar = Sidecar(cast(Client, None), replaying=True)
    assert replan(sidecar, watch, starting=True) == checked == sidecar.calendar and len(reads) == 1
    assert replan(sidecar, watch) is None and len(reads) == 1  # unchanged: not read again

def test_the_sidecar_process_refuses_a_broken_calendar_before_it_starts(tmp_path: Path) -> None:
    broken = tmp_path / "calendar.yaml"
    broken.write_text("events:\n  - name: x\n    kind: holiday\n    start: 2027-01-01\n    end: 2027-01-02\n")
    with pytest.raises(ProcessorStartError, match=r"calendar.yaml: events.0.start: Input should have timezone"):
        main.run(Settings(), threading.Event(), timedelta(minutes=1), calendar=broken)


START = datetime(2026, 11, 23, 12, tzinfo=UTC)
STEP_S, WINDOW_S, SHOPPERS_PER_S = 10, 60, 8.0


def regions_of(calendar: Calendar, holiday: tuple[int, int], outage: tuple[int, int] | None = None,
               evening: float = 1.0) -> list[tuple[str, int]]:
    """(metric, minute opened) of the regions a sidecar opens over four hours of JP's orders and payment
    failures, JP's shoppers halved from the ``holiday`` (start, end) minutes, its payments failing
    through the ``outage`` minutes, and its usual traffic ``evening`` times what it was from the holiday
    on (the day moving on while the holiday lasts)."""
    rng = random.Random(5)
    sidecar = Sidecar(cast(Client, None), replaying=True, calendar=calendar)
    opened: list[tuple[str, int]] = []
    for step in range(4 * 360):
        end = START + timedelta(seconds=STEP_S * (step + 1))
        minute = step // 6
        level = 0.5 if holiday[0] <= minute < holiday[1] else evening if minute >= holiday[1] else 1.0
        orders = poisson(rng, SHOPPERS_PER_S * level * WINDOW_S * (1 + 0.05 * math.sin(step / 50)))
        failing = 0.6 if outage and outage[0] <= minute < outage[1] else 0.02
        failures = sum(rng.random() < failing for _ in range(orders))
        windows = {"JP": {"orders_per_s": Point(orders / WINDOW_S, orders, "rate", WINDOW_S),
                          "payment_failure_rate": Point(failures / max(orders, 1), orders, "ratio", WINDOW_S)}}
        opened += [(c.region.metric, minute) for c in sidecar._score(end, windows, {}) if c.kind == "opened"]
    return opened


def test_a_known_holiday_opens_no_region_on_its_volumes_and_leaves_their_usual_level_as_it_was() -> None:
    holiday = (90, 180)
    unplanned = regions_of(Calendar(), holiday)
    assert ("orders_per_s", holiday[0]) in unplanned, unplanned  # news to the detectors: a drop
    golden = KnownEvent(name="Golden Week", kind="holiday", countries=["JP"],
                        start=START + timedelta(minutes=holiday[0]), end=START + timedelta(minutes=holiday[1]))
    assert regions_of(Calendar((golden,)), holiday) == []  # nor when the shoppers come back after it
    elsewhere = golden.model_copy(update={"countries": ["DE"]})
    assert regions_of(Calendar((elsewhere,)), holiday) == unplanned


def test_after_a_known_holiday_its_volumes_take_the_level_the_day_has_moved_to() -> None:
    """JP's evening has half the traffic of its afternoon: a baseline that stayed at the afternoon's level
    through the holiday would see a drop as it ends; it takes the evening's level instead, then judges."""
    holiday = (90, 180)
    golden = KnownEvent(name="Golden Week", kind="holiday", countries=["JP"],
                        start=START + timedelta(minutes=holiday[0]), end=START + timedelta(minutes=holiday[1]))
    assert regions_of(Calendar((golden,)), holiday, evening=0.5) == []
    assert regions_of(Calendar((golden,)), holiday, evening=0.5, outage=(200, 210)) == [("payment_failure_rate", 200)]


def test_a_payment_outage_during_a_known_holiday_still_opens_its_region() -> None:
    holiday, outage = (90, 180), (120, 130)
    golden = KnownEvent(name="Golden Week", kind="holiday", countries=["JP"],
                        start=START + timedelta(minutes=holiday[0]), end=START + timedelta(minutes=holiday[1]))
    opened = regions_of(Calendar((golden,)), holiday, outage)
    assert [metric for metric, _ in opened] == ["payment_failure_rate"], opened
    assert outage[0] <= opened[0][1] <= outage[0] + 1


def store_regions(calendar: Calendar, us_level: dict[range, float], jp_level: dict[range, float]
                  ) -> list[tuple[str, int]]:
    """(country, minute opened) of the orders regions over three hours of a store of US (8 orders/s) and
    JP (0.3/s) and its total, each country's shoppers scaled by the factor of the minute ranges given."""
    rng = random.Random(9)
    sidecar = Sidecar(cast(Client, None), replaying=True, calendar=calendar)
    opened: list[tuple[str, int]] = []
    for step in range(3 * 360):
        end, minute = START + timedelta(seconds=STEP_S * (step + 1)), step // 6
        counts = {country: poisson(rng, rate * WINDOW_S * next((f for r, f in levels.items() if minute in r), 1.0))
                  for country, rate, levels in (("US", 8.0, us_level), ("JP", 0.3, jp_level))}
        windows = {country: {"orders_per_s": Point(n / WINDOW_S, n, "rate", WINDOW_S)}
                   for country, n in (*counts.items(), ("ALL", sum(counts.values())))}
        opened += [(c.region.country, minute) for c in sidecar._score(end, windows, {}) if c.kind == "opened"]
    return opened


def test_a_known_event_of_a_big_market_leaves_the_stores_total_unjudged_and_a_small_ones_does_not() -> None:
    campaign = {range(90, 150): 2.5}
    assert {country for country, _ in store_regions(Calendar(), campaign, {})} == {"US", "ALL"}
    sale = KnownEvent(name="US sale", kind="campaign", countries=["US"], start=START + timedelta(minutes=90),
                      end=START + timedelta(minutes=150))
    assert store_regions(Calendar((sale,)), campaign, {}) == []  # US brings most of the store
    holiday = KnownEvent(name="Showa Day", kind="holiday", countries=["JP"], start=START + timedelta(minutes=90),
                         end=START + timedelta(minutes=150))
    outage = {range(100, 110): 0.3}  # US's orders collapse during JP's holiday: the store's total still tells
    assert {country for country, _ in store_regions(Calendar((holiday,)), outage, {range(90, 150): 0.5})} == {
        "US", "ALL"}


def test_a_holiday_with_a_level_is_judged_only_beyond_it() -> None:
    """A level is the furthest the event may take the volumes: JP's shoppers halved by a holiday that may
    take them to 0.3 of the usual open nothing; one said to take them only to 0.8 is judged against that."""
    holiday = (90, 180)
    golden = KnownEvent(name="Golden Week", kind="holiday", countries=["JP"], level=0.3,
                        start=START + timedelta(minutes=holiday[0]), end=START + timedelta(minutes=holiday[1]))
    assert regions_of(Calendar((golden,)), holiday) == []
    assert regions_of(Calendar((golden,)), holiday, evening=0.5) == []  # and it settles after, as without a level
    too_tight = golden.model_copy(update={"level": 0.8})
    assert [metric for metric, _ in regions_of(Calendar((too_tight,)), holiday)] == ["orders_per_s"]


def test_a_collapse_during_a_campaign_with_a_level_opens_its_regions() -> None:
    """Black Friday for the whole store, said to take the volumes up to three times: the campaign's 2.5
    times is no news anywhere; US's orders collapsing to 0.3 of the usual in the middle of it is, there
    and in the store's total — where a campaign without a level judges nothing."""
    friday = KnownEvent(name="Black Friday", kind="campaign", level=3.0, start=START + timedelta(minutes=90),
                        end=START + timedelta(minutes=150))
    campaign = {range(90, 150): 2.5}
    assert store_regions(Calendar((friday,)), campaign, campaign) == []
    collapse = {range(100, 110): 0.3, **campaign}
    opened = store_regions(Calendar((friday,)), collapse, campaign)
    assert sorted(country for country, _ in opened) == ["ALL", "US"], opened
    assert all(100 <= minute <= 101 for _, minute in opened), opened
    assert store_regions(Calendar((friday.model_copy(update={"level": None}),)), collapse, campaign) == []


def test_the_levels_of_events_on_one_day_combine_and_one_without_a_level_leaves_the_volumes_unjudged() -> None:
    holiday = KnownEvent(name="Holiday", kind="holiday", level=0.5, start=START, end=START + timedelta(hours=1))
    sale = holiday.model_copy(update={"name": "Sale", "kind": "campaign", "level": 2.0})
    mailing = holiday.model_copy(update={"name": "Mailing", "kind": "campaign", "level": 1.5})
    assert event_calendar.expected_range([holiday, sale, mailing]) == (0.5, 3.0)
    assert event_calendar.expected_range([holiday, sale.model_copy(update={"level": None})]) is None


def known_events_query() -> str:
    store_live = json.loads((ROOT / "grafana" / "dashboards" / "store-live.json").read_text())
    [annotation] = [a for a in store_live["annotations"]["list"] if a["name"] == "Known events"]
    return str(annotation["target"]["rawSql"])


def marked(client: Client, now: datetime, countries: list[str]) -> list[dict[str, object]]:
    """The Known events annotations Store live draws over the last day for the selected ``countries``."""
    day = QueryContext(now - timedelta(days=1), now, 60_000, {"country": countries}, multi=frozenset({"country"}))
    result = client.query(clickhouse_query(known_events_query(), day))
    shaped = Result(list(result.column_names), [t.name for t in result.column_types], result.result_rows)
    assert shape_problems({"type": "annotation"}, {}, shaped) == []
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


@pytest.mark.integration
def test_the_sidecar_shows_the_calendar_it_applies_on_the_wall_display(clickhouse_endpoint: EndpointProcess,
                                                                        tmp_path: Path) -> None:
    settings, client = clickhouse_endpoint.migrated("calendar_shown")
    now = datetime.now(UTC).replace(microsecond=0)
    holiday = now.astimezone(ZoneInfo("Asia/Tokyo")).replace(hour=0, minute=0, second=0)
    path = tmp_path / "calendar.yaml"
    path.write_text(textwrap.dedent(f"""\
        events:
          - name: Culture Day
            kind: holiday
            countries: [JP]
            start: {holiday.isoformat()}
            end: {(holiday + timedelta(days=1)).isoformat()}
          - name: Store-wide sale e-mail
            kind: campaign
            level: 3
            start: {(now - timedelta(hours=6)).isoformat()}
            end: {(now - timedelta(hours=3)).isoformat()}
        """))
    env = {**os.environ, "CLICKHOUSE_URL": settings.clickhouse_http_url,
           "CLICKHOUSE_PASSWORD": settings.clickhouse_password,
           "SHOPPULSE_CLICKHOUSE_DATABASE": settings.clickhouse_database,
           "SHOPPULSE_SIDECAR_METRICS_PORT": str(free_port())}
    env.pop("GRAFANA_URL", None)
    sidecar = ManagedProcess("sidecar", [sys.executable, "-m", "shoppulse", "sidecar", "--warm-up-minutes", "1",
                                         "--calendar", str(path)], tmp_path / "sidecar.log", env=env)
    sidecar.start()
    try:
        def in_force() -> int:
            return int(client.command("SELECT count() FROM known_events_in_force"))

        wait_until(lambda: in_force() == 2, 60, "the calendar in known_events_in_force", sidecar.is_running,
                   lambda: tail(tmp_path / "sidecar.log"))
        everywhere = {e["text"]: e for e in marked(client, now, ["US", "DE", "GB", "FR", "BR", "JP", "IN", "AU"])}
        sale = "Store-wide sale e-mail — campaign in the whole store: its volumes judged beyond 3 times the usual"
        culture_day = "Culture Day — holiday in JP: its volumes are not judged"
        assert {text: e["tags"] for text, e in everywhere.items()} == {sale: "known_event,campaign",
                                                                       culture_day: "known_event,holiday,JP"}
        naive = now.replace(tzinfo=None)  # clickhouse-connect's DateTime64 in UTC
        assert (everywhere[sale]["time"], everywhere[sale]["timeEnd"]) == (naive - timedelta(hours=6),
                                                                            naive - timedelta(hours=3))
        assert [e["text"] for e in marked(client, now, ["US"])] == [sale]  # not JP's holiday

        path.write_text(path.read_text().split("  - name: Store-wide")[0])  # the sale taken out in review
        os.utime(path, ns=(1, 1))
        wait_until(lambda: in_force() == 1, 30, "the edited calendar in force", sidecar.is_running,
                   lambda: tail(tmp_path / "sidecar.log"))
        assert [e["text"] for e in marked(client, now, ["JP"])] == [culture_day]
    finally:
        sidecar.stop()
    client.close()


@pytest.mark.integration
def test_a_calendar_is_written_once_per_version_and_an_emptied_one_shows_nothing(
        clickhouse_endpoint: EndpointProcess) -> None:
    _settings, client = clickhouse_endpoint.migrated("calendar_versions")
    now = datetime.now(UTC).replace(microsecond=0)
    calendar = parse_calendar(GOLDEN_WEEK, "golden")
    first = calendar_table.show(client, calendar, now)
    assert calendar_table.show(client, calendar, now + timedelta(seconds=1)) == first  # a restart, a retry
    assert client.command("SELECT count() FROM known_events") == 2
    assert calendar_table.show(client, Calendar(), now + timedelta(seconds=2)) != first
    assert client.command("SELECT count() FROM known_events_in_force") == 0
    calendar_table.show(client, calendar, now + timedelta(seconds=3))  # back to the first: not written again
    assert client.query("SELECT name FROM known_events_in_force ORDER BY starts_at").result_rows == [
        ("Golden Week",), ("Black Friday e-mail",)]
    assert client.command("SELECT count() FROM known_events") == 2
    client.close()


@pytest.mark.integration
def test_the_calendar_command_says_whether_the_sidecar_has_applied_the_file(clickhouse_endpoint: EndpointProcess,
                                                                            tmp_path: Path) -> None:
    settings, client = clickhouse_endpoint.migrated("calendar_applied")
    path = tmp_path / "calendar.yaml"
    path.write_text(GOLDEN_WEEK)
    env = {**os.environ, "CLICKHOUSE_URL": settings.clickhouse_http_url,
           "CLICKHOUSE_PASSWORD": settings.clickhouse_password,
           "SHOPPULSE_CLICKHOUSE_DATABASE": settings.clickhouse_database, "COLUMNS": "200"}

    def asked() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shoppulse", "calendar", "--file", str(path), "--applied"],
                              capture_output=True, text=True, timeout=60, check=False, env=env)

    before = asked()
    assert before.returncode == 1 and "the sidecar's in force is none yet" in before.stderr, before.stderr
    version = calendar_table.show(client, load_calendar(path), datetime(2026, 12, 6, 7, 0, tzinfo=UTC))
    now = asked()
    assert now.returncode == 0 and f"applied by the sidecar at 2026-12-06 07:00:00 UTC (version {version})" in (
        " ".join(now.stdout.split())), now.stdout
    path.write_text(GOLDEN_WEEK.replace("level: 3", "level: 4"))  # reviewed and merged; the sidecar not there yet
    edited = asked()
    assert edited.returncode == 1 and f"in force is version {version}, applied at 2026-12-06 07:00:00 UTC" in (
        " ".join(edited.stderr.split())), edited.stderr
    client.close()


def test_the_calendar_command_names_clickhouse_without_its_password_when_it_cannot_ask(tmp_path: Path) -> None:
    path = tmp_path / "calendar.yaml"
    path.write_text(GOLDEN_WEEK)
    env = {**os.environ, "CLICKHOUSE_URL": "http://reader:s3cret-pw@127.0.0.1:9"}
    asked = subprocess.run([sys.executable, "-m", "shoppulse", "calendar", "--file", str(path), "--applied"],
                           capture_output=True, text=True, timeout=60, check=False, env=env)
    assert asked.returncode == 1 and "ClickHouse at http://***@127.0.0.1:9" in asked.stderr, asked.stderr
    assert "CLICKHOUSE_USER/CLICKHOUSE_PASSWORD" in asked.stderr and "s3cret-pw" not in asked.stdout + asked.stderr
