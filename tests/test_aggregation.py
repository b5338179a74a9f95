"""Windowed aggregation end to end: every aggregate in ClickHouse equals a straightforward
recomputation from the events (late, out-of-order and duplicate ones included), percentiles
within the histogram's stated error, and rollups that agree with the 1 s data."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from conftest import TEST_PASSWORD, EndpointProcess, start_broker
from pipeline_harness import (
    Expected,
    Pipeline,
    closers,
    nearest_rank,
    read_all,
    recompute,
    settled_window_end,
)
from shoppulse.loadgen.generator import BadInput, EventStream
from shoppulse.loadgen.run import make_producer
from shoppulse.topics import CLEAN_EVENTS, RAW_EVENTS

pytestmark = pytest.mark.integration
EVENTS = 6000
# Event time advances as fast as real time (500 events/s), as in live traffic: the disorder that
# transactions and partition interleaving add then stays within the grace periods.
STEP_MS = 2
PACE_EVERY, PACE_SLEEP_S = 25, 0.05


def produce_run(pipeline: Pipeline, seed: int) -> tuple[EventStream, datetime]:
    """A generated run in the recent past, then — once it is processed — closers at `now` that
    close its windows and sessions."""
    bootstrap = pipeline.broker.bootstrap
    stream = EventStream(rate=100, bad=BadInput(invalid=0.03, duplicates=0.05, late=0.02, out_of_order=0.1),
                         seed=seed)
    producer = make_producer(bootstrap)
    start = datetime.now(UTC) - timedelta(minutes=6)
    for i in range(EVENTS):
        emission = stream.next(start + timedelta(milliseconds=i * STEP_MS))
        producer.produce(RAW_EVENTS.name, emission.value, emission.key)
        if i % PACE_EVERY == 0:  # paced like live traffic, so sessions see no more disorder than their grace
            producer.poll(0)
            time.sleep(PACE_SLEEP_S)
    producer.flush()
    pipeline.wait_caught_up()
    now = datetime.now(UTC)
    for key, value in closers(now):
        producer.produce(RAW_EVENTS.name, value, key)
    producer.flush()
    return stream, now


@pytest.fixture(scope="module")
def run(kafka_libs: Path, clickhouse_endpoint: EndpointProcess,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, Expected, int]]:
    broker = start_broker(kafka_libs, tmp_path_factory.mktemp("agg-kafka"))
    try:
        pipeline = Pipeline.start(broker, clickhouse_endpoint.url, TEST_PASSWORD, tmp_path_factory.mktemp("agg"))
    except BaseException:
        broker.stop()
        raise
    try:
        stream, now = produce_run(pipeline, seed=42)
        clean = read_all(broker.bootstrap, CLEAN_EVENTS.name, stream.tally.valid + len(closers(now)))
        expected = recompute(clean)
        settled = settled_window_end(now)
        wait_for_sessions(pipeline, expected, settled)
        yield pipeline, expected, settled
    finally:
        pipeline.stop()
        broker.stop()


def wait_for_sessions(pipeline: Pipeline, expected: Expected, settled: int, timeout_s: float = 120) -> None:
    want = sum(1 for s in expected.sessions.values() if s["end"] < settled)
    client = pipeline.client()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        have = client.query("SELECT count() FROM sessions WHERE session_end < fromUnixTimestamp64Milli({s:Int64})",
                            parameters={"s": settled}).result_rows[0][0]
        if have >= want:
            return
        time.sleep(1)
    port = pipeline.env["SHOPPULSE_AGGREGATE_METRICS_PORT"]
    metrics = [line for line in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines()
               if line.startswith("shoppulse_aggregate") and "_total" in line]
    raise AssertionError(f"sessions: {have} of {want} in ClickHouse\n{metrics}\n{pipeline.logs()}")


def counters(m: dict) -> tuple:
    """The recomputed counters of one country-second, in metrics_1s's column order."""
    return (m["product_view"], m["add_to_cart"], m["remove_from_cart"], m["checkout_start"], m["payment_attempt"],
            m["failures"], m["purchase"], m["items"], m["revenue"])


def settled_ms(ts: datetime, settled: int) -> bool:
    return ts.replace(tzinfo=UTC).timestamp() * 1000 + 1000 < settled


def test_store_metrics_per_country_second_equal_the_recomputation(run) -> None:
    pipeline, expected, settled = run
    rows = pipeline.client().query(
        "SELECT country, ts, sum(product_views), sum(cart_adds), sum(cart_removes), sum(checkouts),"
        " sum(payment_attempts), sum(payment_failures), sum(orders), sum(items), sum(revenue)"
        " FROM metrics_1s GROUP BY country, ts").result_rows
    got = {(r[0], int(r[1].replace(tzinfo=UTC).timestamp() * 1000)): r[2:] for r in rows if settled_ms(r[1], settled)}
    want = {key: counters(m) for key, m in expected.metrics.items() if key[1] + 1000 < settled}
    assert len(want) > 100
    assert got == want


def test_segments_per_device_category_campaign_and_refund_reason_equal_the_recomputation(run) -> None:
    """Each device's funnel, each category's product views, each campaign's paid clicks, spend and attributed
    orders, and each refund reason's refunds per country-second, late events included."""
    pipeline, expected, settled = run
    rows = pipeline.client().query(
        "SELECT country, dimension, segment, ts, sum(product_views), sum(cart_adds), sum(checkouts),"
        " sum(payment_attempts), sum(payment_failures), sum(orders), sum(revenue), sum(ad_clicks), sum(ad_spend),"
        " sum(refunds), sum(refunded) FROM segment_metrics_1s GROUP BY country, dimension, segment, ts").result_rows
    got = {(c, d, s, int(ts.replace(tzinfo=UTC).timestamp() * 1000)): list(counts)
           for c, d, s, ts, *counts in rows if settled_ms(ts, settled)}
    # (an event a segment does not count, a removal from a cart, makes no row of zeros)
    want = {key: counts for key, counts in expected.segments.items() if key[3] + 1000 < settled and any(counts)}
    assert {d for _, d, _, _ in want} == {"device", "category", "campaign", "refund reason"} and len(want) > 100
    assert got == want


def test_late_events_are_counted_per_country_not_lost(run) -> None:
    pipeline, expected, _settled = run
    got = dict(pipeline.client().query("SELECT country, count() FROM late_events GROUP BY country").result_rows)
    assert got == dict(expected.late)
    assert sum(got.values()) > 0


def test_payment_latency_histograms_failure_reasons_and_percentiles(run) -> None:
    pipeline, expected, settled = run
    client = pipeline.client()
    rows = client.query("SELECT country, gateway, ts, sum(attempts), sum(failures), sumMap(bucket_keys, "
                        "arrayMap(c -> toUInt64(c), bucket_counts)), sumMap(failure_reasons, "
                        "arrayMap(c -> toUInt64(c), reason_counts)) FROM payment_latency_1s "
                        "GROUP BY country, gateway, ts").result_rows
    got = {(c, g, int(ts.replace(tzinfo=UTC).timestamp() * 1000)): (a, f, dict(zip(*hist, strict=True)),
                                                                     dict(zip(*reasons, strict=True)))
           for c, g, ts, a, f, hist, reasons in rows if settled_ms(ts, settled)}
    want = {key: (v["attempts"], v["failures"], dict(v["buckets"]), dict(v["reasons"]))
            for key, v in expected.latency.items() if key[2] + 1000 < settled}
    assert got == want
    assert any(reasons for *_, reasons in got.values())  # failures by reason reached ClickHouse
    for q in (0.5, 0.9, 0.99):
        result = client.query(
            "SELECT country, latency_quantile(sumMapMerge(histogram).1, sumMapMerge(histogram).2, {q:Float64}) "
            "FROM payment_latency_1m GROUP BY country", parameters={"q": q}).result_rows
        for country, approx in result:
            exact = nearest_rank(expected.latencies[country], q)
            assert abs(approx - exact) <= 0.05 * exact + 1, (country, q, approx, exact)


def test_sessions_abandonment_and_conversion_equal_the_recomputation(run) -> None:
    pipeline, expected, settled = run
    rows = pipeline.client().query(
        "SELECT session_id, toUnixTimestamp64Milli(session_start), toUnixTimestamp64Milli(session_end), country,"
        " events, cart_adds, checkouts, purchased, abandoned, revenue FROM sessions "
        "WHERE session_id NOT LIKE 'closer-%'").result_rows
    got = {(r[0], r[1]): {"end": r[2], "country": r[3], "events": r[4], "cart_adds": r[5], "checkouts": r[6],
                          "purchased": r[7], "abandoned": r[8], "revenue": r[9]}
           for r in rows if r[2] < settled}
    want = {k: v for k, v in expected.sessions.items() if v["end"] < settled and not k[0].startswith("closer-")}
    assert len(want) > 50
    assert sum(s["abandoned"] for s in want.values()) > 0
    assert got == want


def test_rollups_agree_with_the_second_data(run) -> None:
    pipeline, _expected, _settled = run
    client = pipeline.client()
    per_second = client.query("SELECT sum(orders), sum(revenue), sum(payment_attempts) FROM metrics_1s").result_rows
    per_minute = client.query("SELECT sum(orders), sum(revenue), sum(payment_attempts) FROM metrics_1m").result_rows
    per_hour = client.query("SELECT sum(orders), sum(revenue), sum(payment_attempts) FROM metrics_1h").result_rows
    assert per_second == per_minute == per_hour
    assert per_second[0][1] > Decimal(0)
    sessions = client.query("SELECT count(), sum(abandoned) FROM sessions").result_rows
    rolled = client.query("SELECT sum(sessions), sum(abandoned) FROM sessions_1m").result_rows
    assert sessions == rolled


def test_the_events_too_late_for_their_session_are_counted(run) -> None:
    pipeline, expected, _settled = run
    port = pipeline.env["SHOPPULSE_AGGREGATE_METRICS_PORT"]
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert expected.session_late > 0  # the run's late events (minutes late) are late for the sessions too
    assert f"shoppulse_aggregate_session_late_events_total {float(expected.session_late)}" in text


def test_freshness_shows_each_source_watermark(run) -> None:
    pipeline, _expected, _settled = run
    rows = pipeline.client().query("SELECT source, count(), max(watermark) FROM freshness GROUP BY source").result_rows
    sources = {source: (countries, watermark) for source, countries, watermark in rows}
    assert set(sources) == {"metrics_1s", "payment_latency_1s", "sessions"}
    assert sources["metrics_1s"][0] == 12


def test_live_partial_sums_add_up_to_every_event_of_each_second(run) -> None:
    """metrics_live holds every event once, also those of seconds whose window is still open."""
    pipeline, expected, _settled = run
    rows = pipeline.client().query(
        "SELECT country, toUnixTimestamp(ts) * 1000, sum(product_views), sum(cart_adds), sum(cart_removes),"
        " sum(checkouts), sum(payment_attempts), sum(payment_failures), sum(orders), sum(items), sum(revenue)"
        " FROM metrics_live GROUP BY country, ts").result_rows
    got = {(r[0], r[1]): r[2:] for r in rows}
    want = {key: counters(m) for key, m in expected.metrics.items()}
    assert len(want) > 100
    assert got == want
    partial_rows = pipeline.client().query("SELECT count() FROM metrics_live").result_rows[0][0]
    assert partial_rows > len(want)  # seconds spread over checkpoints and partitions are summed, not replaced
