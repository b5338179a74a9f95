"""``shoppulse backtest`` over history in real ClickHouse: it replays the sidecar, reports the grid,
writes detection/sensitivity.yaml — and the sidecar detects with what it wrote."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from conftest import EndpointProcess, last_tuesday_1500
from shoppulse.ascode.dashboards.demo_data import METRIC_COLUMNS, DemoPlan, metric_rows
from shoppulse.ascode.detection.backtest import Label, Outcome, Replay, backtest, choose
from shoppulse.sidecar.app import Sidecar
from shoppulse.sidecar.sensitivity import Sensitivity, load_sensitivity

pytestmark = pytest.mark.integration

NOW = last_tuesday_1500()  # within the per-second tables' TTL, and the same hours of the week every run
PLAN = DemoPlan(now=NOW)  # its DE payment outage runs from 100 to 85 minutes before NOW
HISTORY = timedelta(hours=2)
WARM_UP = timedelta(minutes=15)
BURSTS = [NOW - timedelta(minutes=m) for m in (75, 55, 35, 15)]  # NL's unlabelled bursts of views
BURST_S = 60
VIEWS = METRIC_COLUMNS.index("product_views")


def nl_burst(when: datetime) -> bool:
    return any(start <= when < start + timedelta(seconds=BURST_S) for start in BURSTS)


@pytest.fixture(scope="module")
def history(clickhouse_endpoint: EndpointProcess) -> Iterator[tuple[Client, dict[str, str]]]:
    """Two hours of per-second aggregates: the demo's DE outage (a labelled incident) and four minutes
    in which NL's product views rise by half with no order more (a campaign's curious clicks, say: no
    incident anyone should be paged for)."""
    settings, client = clickhouse_endpoint.migrated("backtest")
    rows = metric_rows(PLAN, NOW - HISTORY, NOW, timedelta(seconds=1))
    for row in rows:
        if row[1] == "NL" and nl_burst(row[0]):
            row[VIEWS] = round(row[VIEWS] * 1.5)
    client.insert("metrics_1s", [[*r, 0, i] for i, r in enumerate(rows)],
                  column_names=[*METRIC_COLUMNS, "src_partition", "src_offset"])
    env = {"CLICKHOUSE_URL": settings.clickhouse_url or "", "CLICKHOUSE_PASSWORD": settings.clickhouse_password,
           "SHOPPULSE_CLICKHOUSE_DATABASE": settings.clickhouse_database}
    yield client, env
    client.close()


def outage_label() -> Label:
    incident = PLAN.incident
    return Label(incident.start, incident.end, frozenset({incident.country}),
                 frozenset({"payment_failure_rate", "orders_per_s", "revenue_per_s"}))


def test_backtest_proposes_less_sensitivity_where_history_cried_wolf(history: tuple[Client, dict[str, str]]) -> None:
    client, _env = history
    report = backtest(client, 1, [outage_label()], Sensitivity(), grid=(3.0, 4.0, 6.0, 12.0), warm_up=WARM_UP)
    assert report.days == pytest.approx((HISTORY - WARM_UP) / timedelta(days=1), abs=0.01)
    # the default detection finds the outage in DE and the store, and alerts on NL's bursts
    nl_now, nl_proposed = report.by_country["NL"]
    assert report.by_country["DE"][0].found == 1 and report.by_country["DE"][0].delays[0] <= 60
    assert nl_now.false_alerts >= 2
    # the proposal makes NL's views less sensitive, keeps the outage found, and cuts the false alerts
    assert report.changes[("views_per_s", "NL")][0] == 4.0 and report.changes[("views_per_s", "NL")][1] > 4.0
    assert report.chosen.found == report.current.found
    assert nl_proposed.false_alerts < nl_now.false_alerts
    assert report.chosen.false_alerts < report.current.false_alerts
    # the uniform grid: the most sensitive finds at least as much and cries wolf at least as often
    assert report.uniform[3.0].false_alerts >= report.uniform[4.0].false_alerts >= report.uniform[12.0].false_alerts
    assert report.uniform[3.0].found >= report.uniform[12.0].found


def test_the_backtest_leaves_out_only_detectors_without_a_say(history: tuple[Client, dict[str, str]]) -> None:
    """The backtest's sidecar runs without River's trees, which only add to the stored score: every
    candidate's regions open where the full sidecar's do."""
    client, _env = history
    start, end = NOW - timedelta(hours=1), NOW - timedelta(minutes=1)
    openings = []
    for deciding_only in (False, True):
        replay = Replay(client, (3.0, 4.0, 6.0), Sensitivity(), start + WARM_UP)
        sidecar = Sidecar(client, replaying=True, on_verdict=replay.observe, deciding_only=deciding_only)
        sidecar.last_step = start
        sidecar.score_until(end)
        assert {d.name for s in sidecar.series.values() for d in s.detector.detectors} == (
            {"robust_z", "seasonal_band"} if deciding_only else {"robust_z", "half_space_trees", "seasonal_band"})
        openings.append(dict(replay.openings))
    assert openings[0] == openings[1]
    assert sum(len(at) for at in openings[0].values()) >= 3  # the outage and NL's bursts, at least


def shoppulse_backtest(env: dict[str, str], home: Path, labels: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoppulse", "backtest", "--days", "1", "--labels", str(labels),
                           "--open-z", "3,4,6,12", "--warm-up", "15", "--write"], capture_output=True, text=True,
                          timeout=280, env={**os.environ, **env, "SHOPPULSE_HOME": str(home)}, check=False)


def test_the_cli_writes_the_file_and_the_sidecar_detects_with_it(history: tuple[Client, dict[str, str]],
                                                                  tmp_path: Path) -> None:
    client, env = history
    labels = tmp_path / "ground_truth.jsonl"
    outage = outage_label()
    labels.write_text(json.dumps({"kind": "payment_outage", "countries": sorted(outage.countries),
                                  "metrics": sorted(outage.metrics), "start": outage.start.isoformat(),
                                  "end": outage.end.isoformat()}) + "\n")
    home = tmp_path / "home"
    home.mkdir()
    done = shoppulse_backtest(env, home, labels)
    assert done.returncode == 0, done.stderr
    assert "every series at one sensitivity" in done.stdout and "proposed" in done.stdout
    written = home / "detection" / "sensitivity.yaml"
    assert "+  NL:" in done.stdout and "+    views_per_s:" in done.stdout  # the diff of the retune
    tuned = load_sensitivity(written)
    assert tuned.open_z("views_per_s", "NL") > 4.0

    def nl_views_regions(sensitivity: Sensitivity) -> list[datetime]:
        """The regions a sidecar detecting with ``sensitivity`` writes for NL's views over the history."""
        client.command("TRUNCATE TABLE anomalies")
        sidecar = Sidecar(client)
        sidecar.retune(sensitivity)
        sidecar.last_step = NOW - HISTORY
        sidecar.score_until(NOW)
        return [opened for (opened,) in client.query(
            "SELECT opened_at FROM anomalies FINAL WHERE metric = 'views_per_s' AND country = 'NL'").result_rows]

    assert any(nl_burst(at.replace(tzinfo=UTC) - timedelta(seconds=BURST_S))
               for at in nl_views_regions(Sensitivity()))
    assert nl_views_regions(tuned) == []
    # the file is the proposal itself: a second run over the same history proposes it again and writes nothing
    same = backtest(client, 1, [outage], Sensitivity(), grid=(3.0, 4.0, 6.0, 12.0), warm_up=WARM_UP)
    assert written.read_text() == same.proposed.as_yaml()


def test_a_campaign_in_the_calendar_is_no_false_alert_to_tune_away(history: tuple[Client, dict[str, str]],
                                                                     tmp_path: Path) -> None:
    """NL's bursts of views listed as a campaign in the home's calendar: the backtest judges them as the
    sidecar does — not at all — and proposes no change for NL; the DE outage is still found."""
    _client, env = history
    labels = tmp_path / "ground_truth.jsonl"
    outage = outage_label()
    labels.write_text(json.dumps({"countries": ["DE"], "start": outage.start.isoformat(),
                                  "end": outage.end.isoformat()}) + "\n")
    home = tmp_path / "home"
    (home / "detection").mkdir(parents=True)
    (home / "detection" / "calendar.yaml").write_text(
        "events:\n  - name: NL spring sale\n    kind: campaign\n    countries: [NL]\n"
        f"    start: {(BURSTS[0] - timedelta(minutes=1)).isoformat()}\n"
        f"    end: {(BURSTS[-1] + timedelta(minutes=2)).isoformat()}\n")
    done = shoppulse_backtest(env, home, labels)
    assert done.returncode == 0, done.stderr
    assert "NL:" not in done.stdout and "views_per_s" not in done.stdout, done.stdout
    rows = {cells[0]: cells[1:] for line in done.stdout.splitlines()
            if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) == 5}
    assert rows["NL"] == ["-", "-", "0.00", "0.00"], done.stdout  # no false alert now: nothing to tune away
    assert rows["DE"][:2] == ["1/1", "1/1"], done.stdout


def test_bad_labels_are_refused_with_the_line(history: tuple[Client, dict[str, str]], tmp_path: Path) -> None:
    _client, env = history
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"start": "2026-11-24T10:00:00+00:00", "end": "2026-11-24T11:00:00+00:00", '
                      '"countries": ["DE"]}\n{"start": "yesterday", "end": "2026-11-24T11:00:00+00:00", '
                      '"countries": ["DE"]}\n')
    done = subprocess.run([sys.executable, "-m", "shoppulse", "backtest", "--labels", str(labels)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env}, check=False)
    assert done.returncode == 2
    assert "line 2: start 'yesterday' is not an ISO 8601 time" in done.stderr


def test_the_choice_raises_the_noisiest_series_that_loses_nothing_first() -> None:
    """A country over its budget: raising the series that finds the labelled incident would lose it, so the
    one that only cries wolf is raised, as far as needed; a series whose lower candidate finds more is lowered."""
    grid = (3.0, 4.0, 6.0)
    results = {
        ("payment_failure_rate", "DE"): {3.0: Outcome({0: 10.0}, 3), 4.0: Outcome({0: 20.0}, 2), 6.0: Outcome({}, 0)},
        ("views_per_s", "DE"): {3.0: Outcome({}, 9), 4.0: Outcome({}, 6), 6.0: Outcome({}, 1)},
        ("orders_per_s", "DE"): {3.0: Outcome({0: 30.0}, 1), 4.0: Outcome({}, 0), 6.0: Outcome({}, 0)},
    }
    chosen = choose(results, grid, Sensitivity(), days=2.0, budget_per_day=2.0)
    # views raised to 6 (removes 5 losing nothing); orders lowered to 3 (finds the incident); total 2+1+1 = 4
    assert chosen == {("payment_failure_rate", "DE"): 4.0, ("views_per_s", "DE"): 6.0, ("orders_per_s", "DE"): 3.0}


def test_the_speed_bench_replays_its_own_history_and_drops_its_database(
        history: tuple[Client, dict[str, str]]) -> None:
    client, env = history
    result = subprocess.run([sys.executable, "-m", "shoppulse", "bench", "backtest", "--hours", "0.5"],
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = re.search(r"over 0\.5 h of history \(180 steps of 10 s, 6 candidate sensitivities\): replayed in "
                        r"([\d.]+) s, [\d,]+ steps/s — ([\d.]+) min per day", result.stdout)
    assert figures, result.stdout
    assert float(figures[2]) == pytest.approx(float(figures[1]) / 60 * 48, rel=0.05)
    databases = client.query("SELECT name FROM system.databases WHERE name LIKE 'bench_backtest_%'").result_rows
    assert databases == []
