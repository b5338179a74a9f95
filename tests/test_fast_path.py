"""The fast path over real ClickHouse: a provisional region from the live seconds within seconds of a step
change, confirmed by the final windows as the same region (one annotation), or withdrawn when they do
not confirm it — and then no annotation is left in Grafana (the stand-in enforcing its API)."""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from clickhouse_connect.driver.client import Client
from prometheus_client import REGISTRY

from conftest import EndpointProcess, last_tuesday_1500
from shoppulse.ascode.dashboards.demo_data import METRIC_COLUMNS, DemoPlan, metric_rows
from shoppulse.bench.annotate import fail_payments
from shoppulse.devstack.grafana_standin import GrafanaState, grafana_standin
from shoppulse.grafana_api import GrafanaClient
from shoppulse.sidecar.annotations import sync
from shoppulse.sidecar.app import Sidecar
from shoppulse.sidecar.detectors import USUAL
from shoppulse.sidecar.event_calendar import Calendar, KnownEvent
from shoppulse.sidecar.fast_path import CONFIRM_WITHIN, FAST_METRICS, FastPath
from shoppulse.sidecar.live_dispersion import prior_ratio
from shoppulse.sidecar.signals import Totals, points_by_country

pytestmark = pytest.mark.integration

TOKEN = "glsa_fast_path"
# Within metrics_live's one-day TTL; the demo's own outage lies 100 minutes back, outside this history. The
# store's traffic is drawn as at PLAYED (a Tuesday afternoon) and stamped at NOW, so every run sees the same.
NOW = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
PLAYED = last_tuesday_1500()
HISTORY = timedelta(minutes=40)
COLUMNS = [*METRIC_COLUMNS, "src_partition", "src_offset"]


class Feed:
    """Seconds of the demo store written as the pipeline writes them: the live sums (ingestion) and the
    final ones (aggregation), optionally with every payment of one country failing."""

    def __init__(self, client: Client) -> None:
        self.client, self.offset = client, 0

    def rows(self, start: datetime, seconds: int, failing: str | None = None,
             failing_for: int | None = None, views: tuple[str | None, float] | None = None) -> list[list[object]]:
        """``seconds`` of the store from ``start``; ``failing``'s payments all fail (for the first
        ``failing_for`` seconds only, when given); ``views``: a country's product views (every country's:
        None) times a factor."""
        played = PLAYED + (start - NOW)
        rows = metric_rows(DemoPlan(now=PLAYED, seed=int((start - NOW).total_seconds()) % 2**31), played,
                           played + timedelta(seconds=seconds), timedelta(seconds=1))
        for row in rows:
            row[0] += NOW - PLAYED
        until = start + timedelta(seconds=seconds if failing_for is None else failing_for)
        for row in rows:
            if row[1] == failing and row[0] < until:
                fail_payments(row)
            if views is not None and views[0] in (row[1], None):
                row[2] = round(cast(int, row[2]) * views[1])
        return rows

    def write(self, table: str, rows: list[list[object]]) -> None:
        self.client.insert(table, [[*r, 0, self.offset + i] for i, r in enumerate(rows)], column_names=COLUMNS)
        self.offset += len(rows)


@pytest.fixture
def warm(clickhouse_endpoint: EndpointProcess) -> Iterator[tuple[Client, Feed, Sidecar]]:
    """Forty quiet minutes, final and live; a sidecar that has scored them."""
    _settings, client = clickhouse_endpoint.migrated("fast")
    feed = Feed(client)
    history = feed.rows(NOW - HISTORY, int(HISTORY.total_seconds()))
    feed.write("metrics_1s", history)
    feed.write("metrics_live", history)
    sidecar = Sidecar(client)
    sidecar.last_step = NOW - HISTORY
    sidecar.score_until(NOW)
    yield client, feed, sidecar
    client.close()


def play(feed: Feed, sidecar: Sidecar, rows: list[list[object]]) -> list[int]:
    """Each second of ``rows`` goes live, and the sidecar looks (as it does at every poll);
    then they are written final. The seconds after which a provisional region was opened."""
    opened_after = []
    for second, at in enumerate(sorted({cast(datetime, r[0]) for r in rows})):
        feed.write("metrics_live", [r for r in rows if r[0] == at])
        if sidecar.look_live():
            opened_after.append(second + 1)
    feed.write("metrics_1s", rows)
    return opened_after


def stored(client: Client) -> list[tuple[object, ...]]:
    return [tuple(r) for r in client.query(
        "SELECT anomaly_id, metric, country, status, detectors FROM anomalies FINAL ORDER BY opened_at").result_rows]


def test_a_payment_outage_opens_a_provisional_region_in_seconds_and_the_final_one_is_the_same(
        warm: tuple[Client, Feed, Sidecar]) -> None:
    client, feed, sidecar = warm
    opened_after = play(feed, sidecar, feed.rows(NOW, 90, failing="US"))
    assert opened_after and opened_after[0] <= 5  # seconds of the outage live when the region opened
    [(anomaly_id, metric, country, status, detectors)] = stored(client)
    assert (metric, country, status, detectors) == ("payment_failure_rate", "US", "provisional", ["fast_path"])
    with grafana_standin(TOKEN) as (url, grafana):
        assert sync(client, GrafanaClient(url, TOKEN)) == 0
        [drawn] = [a["text"] for a in grafana.annotations.values() if f"anomaly_id:{anomaly_id}" in a["tags"]]
        assert re.fullmatch(r"Payment failure rate in US rose to \d+% \(expected \d+%, \+\d+%\)\. Seen first in the "
                            r"live seconds: kept once the final windows confirm it, withdrawn if they do not\.", drawn)
        sidecar.score_until(NOW + timedelta(seconds=90))  # the final windows see the outage
        assert sync(client, GrafanaClient(url, TOKEN)) == 0
        rows = [r for r in stored(client) if r[1] == "payment_failure_rate" and r[2] == "US"]
        assert [(r[0], r[3]) for r in rows] == [(anomaly_id, "final")]
        assert "fast_path" in rows[0][4] and len(rows[0][4]) > 1  # the final path's detectors agreed
        assert sum(f"anomaly_id:{anomaly_id}" in a["tags"] for a in grafana.annotations.values()) == 1


def test_views_beyond_a_campaigns_level_open_a_provisional_region_and_within_it_or_without_one_do_not(
        warm: tuple[Client, Feed, Sidecar]) -> None:
    """Black Friday for the whole store in the calendar: said to bring up to three times the shoppers, US's
    views at 2.5 times are no news; at ten times (a bot flood, a crawler) they are, in seconds. Without a
    level its volumes are not judged, live or final."""
    client, feed, sidecar = warm
    friday = KnownEvent(name="Black Friday", kind="campaign", start=NOW - timedelta(minutes=1),
                        end=NOW + timedelta(hours=1))
    levelled = Calendar((friday.model_copy(update={"level": 3.0}),))
    sidecar.calendar = levelled
    assert play(feed, sidecar, feed.rows(NOW, 8, views=("US", 2.5))) == []
    sidecar.calendar = Calendar((friday,))
    assert play(feed, sidecar, feed.rows(NOW + timedelta(seconds=8), 8, views=("US", 10.0))) == []
    sidecar.calendar = levelled
    opened_after = play(feed, sidecar, feed.rows(NOW + timedelta(seconds=16), 8, views=("US", 10.0)))
    assert opened_after and opened_after[0] <= 5
    [(_, metric, country, status, _)] = stored(client)
    assert (metric, country, status) == ("views_per_s", "US", "provisional")


def test_a_shop_going_silent_opens_a_provisional_region_in_seconds(warm: tuple[Client, Feed, Sidecar]) -> None:
    """The US shop stops sending anything (down, or its tracking broken) while the other countries send as
    usual: five seconds of no views against a usual fifty a second that vary twelve times as much as
    Poisson counts are as rare as a normal deviate of six, though under five standard deviations out.
    Opened in the seventh second: five silent seconds judged (the newest one, still filling, is not), at
    two looks in a row."""
    client, feed, sidecar = warm
    opened_after = play(feed, sidecar, [r for r in feed.rows(NOW, 20) if r[1] != "US"])
    assert opened_after and opened_after[0] <= 7
    found = {(metric, country, status) for _, metric, country, status, _ in stored(client)}
    assert ("views_per_s", "US", "provisional") in found and {country for _, country, _ in found} == {"US"}


def test_a_shop_going_silent_is_seen_sooner_once_the_fast_path_has_learned_how_its_live_seconds_vary(
        warm: tuple[Client, Feed, Sidecar]) -> None:
    """Ten quiet minutes of live seconds teach each rate how much its events vary over five seconds (less
    than over the final path's minute, where the level's moves add to them): the US shop's silence is
    then unmistakable sooner."""
    client, feed, sidecar = warm
    assert play(feed, sidecar, feed.rows(NOW, 600)) == []
    sidecar.score_until(NOW + timedelta(seconds=600))
    learned = REGISTRY.get_sample_value("shoppulse_sidecar_live_variance_ratio",
                                        {"metric": "views_per_s", "country": "US"})
    final = prior_ratio(sidecar.series[("views_per_s", "US")].detector.robust, sidecar.window_s)
    assert learned is not None and 1.0 <= learned < final / 2  # as the metric shows it
    opened_after = play(feed, sidecar, [r for r in feed.rows(NOW + timedelta(seconds=600), 20) if r[1] != "US"])
    assert opened_after and opened_after[0] <= 5  # seven without the live seconds' lesson (above)
    assert [(r[1], r[2]) for r in stored(client)] == [("views_per_s", "US")]


def test_seconds_in_which_no_country_sent_anything_are_a_gap_of_the_feed_not_every_shop_going_silent(
        warm: tuple[Client, Feed, Sidecar]) -> None:
    """The feed loses a few seconds at a time (the shop's collector restarting), every country silent at
    once, and comes back slowly (its first second brings a tenth of the views). That is not each shop
    going down: nothing opens."""
    client, feed, sidecar = warm
    gaps, resumed = {*range(5, 11), *range(20, 26), *range(40, 46)}, {11, 26, 46}
    rows = []
    for row in feed.rows(NOW, 60):
        second = int((cast(datetime, row[0]) - NOW).total_seconds())
        if second in resumed:
            row[2] = round(cast(int, row[2]) / 10)
        if second not in gaps:
            rows.append(row)
    assert play(feed, sidecar, rows) == [] and stored(client) == []


def test_a_move_of_the_whole_store_no_country_shows_plainly_opens_a_store_wide_provisional_region(
        warm: tuple[Client, Feed, Sidecar]) -> None:
    """Two and a half times the product views in every country at once (a TV advert, a newsletter to
    everyone): in five seconds no country's views are unmistakable yet, the store's are. The final windows
    confirm it."""
    client, feed, sidecar = warm
    assert play(feed, sidecar, feed.rows(NOW, 5, views=(None, 2.5))) == [5]
    [(anomaly_id, metric, country, status, _)] = stored(client)
    assert (metric, country, status) == ("views_per_s", "ALL", "provisional")
    rows = feed.rows(NOW + timedelta(seconds=5), 60, views=(None, 2.5))
    feed.write("metrics_live", rows)
    feed.write("metrics_1s", rows)
    sidecar.score_until(NOW + timedelta(seconds=60))
    assert (anomaly_id, "final") in {(r[0], r[3]) for r in stored(client) if r[1:3] == ("views_per_s", "ALL")}


def withdraw_a_blip(client: Client, feed: Feed, sidecar: Sidecar, url: str, grafana: GrafanaState) -> uuid.UUID:
    """Four seconds of every German payment failing: plain in five live seconds, a few failed payments
    more in a minute's window. Its provisional region is drawn in Grafana, then withdrawn."""
    assert play(feed, sidecar, feed.rows(NOW, 10, failing="DE", failing_for=4))
    [(anomaly_id, _metric, country, status, _detectors)] = stored(client)
    assert (country, status) == ("DE", "provisional")
    assert sync(client, GrafanaClient(url, TOKEN)) == 0
    assert any(f"anomaly_id:{anomaly_id}" in a["tags"] for a in grafana.annotations.values())
    rows = feed.rows(NOW + timedelta(seconds=10), int(CONFIRM_WITHIN.total_seconds()) + 30)
    feed.write("metrics_live", rows)
    feed.write("metrics_1s", rows)
    sidecar.score_until(NOW + timedelta(seconds=10) + CONFIRM_WITHIN + timedelta(seconds=30))
    assert [(r[0], r[3]) for r in stored(client)] == [(anomaly_id, "withdrawn")]
    return anomaly_id


def test_a_blip_the_final_windows_do_not_confirm_is_withdrawn_and_its_annotation_deleted(
        warm: tuple[Client, Feed, Sidecar]) -> None:
    client, feed, sidecar = warm
    with grafana_standin(TOKEN) as (url, grafana):
        anomaly_id = withdraw_a_blip(client, feed, sidecar, url, grafana)
        assert sync(client, GrafanaClient(url, TOKEN)) == 0
        assert not any(f"anomaly_id:{anomaly_id}" in a["tags"] for a in grafana.annotations.values())
        assert sync(client, GrafanaClient(url, TOKEN)) == 0  # done once: nothing more to delete
        assert [method for method, _path, _body in grafana.requests].count("DELETE") == 1


@pytest.mark.parametrize("grant", [["annotations:*"], ["annotations:type:dashboard", "annotations:type:organization"]],
                         ids=["wildcard", "typed"])
def test_a_withdrawn_region_whose_annotation_someone_deleted_is_done_whatever_the_grant(
        warm: tuple[Client, Feed, Sidecar], grant: list[str]) -> None:
    """Grafana answers the DELETE of an annotation it no longer has 404 to a wildcard grant, and 403 to a
    grant scoped to annotation types (it cannot resolve a missing annotation's type): either way the
    withdrawal is done, and not retried for ever."""
    client, feed, sidecar = warm
    with grafana_standin(TOKEN) as (url, grafana):
        grafana.permissions["annotations:delete"] = grant
        anomaly_id = withdraw_a_blip(client, feed, sidecar, url, grafana)
        [ours] = [a["id"] for a in grafana.annotations.values() if f"anomaly_id:{anomaly_id}" in a["tags"]]
        grafana.delete_annotation(ours)  # someone removed it in Grafana meanwhile
        assert sync(client, GrafanaClient(url, TOKEN)) == 0
        refusals = [r for r in grafana.requests if r[0] == "DELETE"]
        assert sync(client, GrafanaClient(url, TOKEN)) == 0  # done once: nothing more to delete
        assert [r for r in grafana.requests if r[0] == "DELETE"] == refusals and len(refusals) == 1


def test_quiet_live_seconds_open_nothing() -> None:
    """Half an hour of the demo store's ordinary seconds, looked at every second after a warm-up: no
    provisional region in any country."""
    rng = random.Random(3)
    sidecar = Sidecar(cast(Client, None), replaying=True)
    fast = cast(FastPath, sidecar.fast)
    start = PLAYED - timedelta(hours=2)
    rows = metric_rows(DemoPlan(now=PLAYED, seed=rng.randrange(1000)), start, PLAYED - timedelta(minutes=60),
                       timedelta(seconds=1))
    by_second: dict[datetime, dict[str, Totals]] = {}
    for row in rows:
        views, carts, _removes, checkouts, attempts, failures, orders, _items = row[2:10]
        by_second.setdefault(row[0], {})[row[1]] = Totals(orders, float(row[10]), views, carts, attempts, failures,
                                                          checkouts)
    seconds = sorted(by_second)
    opened = []
    for index, second in enumerate(seconds):
        if index >= 60 and (index + 1) % 10 == 0:  # a final step: the window of the last minute
            window: dict[str, Totals] = {}
            for past in seconds[index - 59: index + 1]:
                for country, totals in by_second[past].items():
                    window[country] = window.get(country, Totals()) + totals
            sidecar._score(second + timedelta(seconds=1), points_by_country(window, {}, 60), {})
        if index >= 1800:  # after half an hour of warm-up, a look every second
            live = {c: {s: by_second[s][c] for s in seconds[index - 6: index + 1] if c in by_second[s]}
                    for c in by_second[second]}
            opened += fast.look(second, live, {k: (s.detector.robust, s.tracker, USUAL)
                                               for k, s in sidecar.series.items()})
    assert opened == [] and fast.provisional == {}
    judged = [key for key, s in sidecar.series.items() if key[0] in FAST_METRICS and s.detector.robust.warm]
    assert len(judged) >= 33  # the three metrics of (nearly) every country and the store were judged
