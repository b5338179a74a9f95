"""Crash safety and scale-out: two instances of each processor share the topics' partitions; one
instance of each is killed with SIGKILL at random moments and restarted (every kill and restart a
rebalance), ClickHouse is unreachable for 20 s and the broker restarts during the run — the final
aggregates still equal the recomputation exactly, nothing lost and nothing counted twice across
instances."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import TEST_PASSWORD, EndpointProcess, start_broker
from pipeline_harness import Pipeline, closers, read_all, recompute, settled_window_end
from shoppulse.loadgen.generator import BadInput, EventStream
from shoppulse.loadgen.run import make_producer
from shoppulse.topics import CLEAN_EVENTS, RAW_EVENTS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # the heaviest run: crashes, outages, restarts
EVENTS = 9000
STEP_MS = 2
PACE_EVERY, PACE_SLEEP_S = 25, 0.05  # 500 events/s: a run of 18 s


def produce_paced(bootstrap: str, done: threading.Event, out: dict) -> None:
    stream = EventStream(rate=100, bad=BadInput(invalid=0.02, duplicates=0.05, late=0.01, out_of_order=0.05),
                         seed=7)
    producer = make_producer(bootstrap)
    start = datetime.now(UTC) - timedelta(minutes=3)
    for i in range(EVENTS):
        emission = stream.next(start + timedelta(milliseconds=i * STEP_MS))
        producer.produce(RAW_EVENTS.name, emission.value, emission.key)
        if i % PACE_EVERY == 0:
            producer.poll(0)
            time.sleep(PACE_SLEEP_S)
    producer.flush()
    out["stream"] = stream
    done.set()


def restart_dead(pipeline: Pipeline, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        for processor in pipeline.processors:
            if not processor.alive():
                processor.start()


@pytest.fixture(scope="module")
def crashed_run(kafka_libs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    endpoint = EndpointProcess(tmp_path_factory.mktemp("crash-ch") / "db").start()
    broker = start_broker(kafka_libs, tmp_path_factory.mktemp("crash-kafka"))
    pipeline = None
    try:
        pipeline = Pipeline.start(broker, endpoint.url, TEST_PASSWORD, tmp_path_factory.mktemp("crash"), instances=2)
        done, out = threading.Event(), {}
        producer = threading.Thread(target=produce_paced, args=(broker.bootstrap, done, out))
        producer.start()
        rng = random.Random(11)
        kills = 0
        while not done.is_set() and kills < 6:  # SIGKILL each processor three times, at random moments
            time.sleep(rng.uniform(1.0, 2.5))
            victim = (pipeline.ingest, pipeline.aggregate)[kills % 2]
            victim.kill()
            time.sleep(rng.uniform(0.2, 1.0))
            victim.start()
            kills += 1
        endpoint.stop()  # ClickHouse unreachable for 20 s while events keep flowing
        time.sleep(20)
        endpoint = EndpointProcess(endpoint.data_dir, port=endpoint.port).start()
        producer.join(120)
        broker.stop()  # the broker restarts; processors that give up are restarted, as `shoppulse up` does
        broker.start()
        watchdog_stop = threading.Event()
        watchdog = threading.Thread(target=restart_dead, args=(pipeline, watchdog_stop))
        watchdog.start()
        try:
            pipeline.wait_caught_up(timeout_s=240)
        finally:
            watchdog_stop.set()
            watchdog.join()
        assert kills == 6
        now = datetime.now(UTC)
        bootstrap = broker.bootstrap
        producer_closers = make_producer(bootstrap)
        for key, value in closers(now):
            producer_closers.produce(RAW_EVENTS.name, value, key)
        producer_closers.flush()
        stream = out["stream"]
        clean = read_all(bootstrap, CLEAN_EVENTS.name, stream.tally.valid + len(closers(now)))
        yield pipeline, stream, clean, recompute(clean), settled_window_end(now)
    finally:
        if pipeline is not None:
            pipeline.stop()
        broker.stop()
        endpoint.stop()


def test_every_valid_event_reaches_the_clean_topic_exactly_once(crashed_run) -> None:
    _pipeline, stream, clean, _expected, _settled = crashed_run
    ids = [m.value for m in clean if b'"closer-' not in m.value]
    assert len(ids) == stream.tally.valid
    assert len(set(ids)) == len(ids)


def test_store_metrics_equal_the_recomputation_after_crashes(crashed_run) -> None:
    pipeline, _stream, _clean, expected, settled = crashed_run
    client = pipeline.client()
    deadline = time.monotonic() + 120
    want = {(c, s): (m["purchase"], m["product_view"], m["revenue"]) for (c, s), m in expected.metrics.items()
            if s + 1000 < settled}
    while True:
        rows = client.query("SELECT country, toUnixTimestamp(ts) * 1000, sum(orders), sum(product_views), "
                            "sum(revenue) FROM metrics_1s GROUP BY country, ts").result_rows
        got = {(c, s): (o, v, r) for c, s, o, v, r in rows if s + 1000 < settled}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert got == want, pipeline.logs()
    late = dict(client.query("SELECT country, count() FROM late_events GROUP BY country").result_rows)
    assert late == dict(expected.late)
    segments = client.query("SELECT country, dimension, segment, sum(orders), sum(product_views), sum(revenue) "
                            "FROM segment_metrics_1s WHERE toUnixTimestamp(ts) * 1000 + 1000 < {s:Int64} "
                            "GROUP BY country, dimension, segment", parameters={"s": settled}).result_rows
    want_segments: dict[tuple[str, str, str], list] = {}
    for (country, dimension, segment, second), counts in expected.segments.items():
        if second + 1000 < settled:
            total = want_segments.setdefault((country, dimension, segment), [0, 0, 0])
            total[0], total[1], total[2] = total[0] + counts[5], total[1] + counts[0], total[2] + counts[6]
    assert {(c, d, s): [o, v, r] for c, d, s, o, v, r in segments} == want_segments


def test_live_partial_sums_equal_the_recomputation_after_crashes(crashed_run) -> None:
    pipeline, _stream, _clean, expected, _settled = crashed_run
    want = {(c, s): (m["purchase"], m["product_view"], m["revenue"]) for (c, s), m in expected.metrics.items()}
    rows = pipeline.client().query("SELECT country, toUnixTimestamp(ts) * 1000, sum(orders), sum(product_views), "
                                   "sum(revenue) FROM metrics_live GROUP BY country, ts").result_rows
    assert {(c, s): (o, v, r) for c, s, o, v, r in rows} == want


ROW_KEYS = {  # what identifies one row written by the pipeline
    "metrics_1s": "country, ts, src_partition, src_offset",
    "metrics_live": "country, ts, src_partition, src_offset",
    "payment_latency_1s": "country, gateway, ts, src_partition, src_offset",
    "segment_metrics_1s": "country, dimension, segment, ts, src_partition, src_offset",
    "late_events": "src_partition, src_offset",
    "sessions": "session_id, session_start",
}


@pytest.mark.parametrize("table", sorted(ROW_KEYS))
def test_no_row_was_written_twice(crashed_run, table: str) -> None:
    pipeline, *_ = crashed_run
    total, distinct = pipeline.client().query(
        f"SELECT count(), uniqExact({ROW_KEYS[table]}) FROM {table}").result_rows[0]
    assert total == distinct > 0
