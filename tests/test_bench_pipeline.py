"""The pipeline benchmark: one short run end to end as a user starts it, and its accounting of
the CPU seconds of every process it started, by name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from shoppulse.bench.pipeline import _process_name, cpu_seconds
from shoppulse.settings import load_settings

BUSY_THEN_WAIT = ("import time\nstart = time.process_time()\nwhile time.process_time() - start < 0.3:\n    pass\n"
                  "print('busy', flush=True)\ntime.sleep(60)")


def test_processes_are_named_by_their_role() -> None:
    assert _process_name([b"/usr/bin/java", b"-Xmx1g", b"kafka.Kafka", b""]) == "broker"
    assert _process_name([b"/venv/bin/python3", b"-m", b"shoppulse", b"aggregate", b""]) == "aggregate"
    assert _process_name([b"/venv/bin/python3", b"-m", b"shoppulse", b"clickhouse", b"serve"]) == "clickhouse"
    assert _process_name([b"/usr/bin/sleep", b"5"]) == "sleep"
    assert _process_name([]) == "?"


def test_cpu_seconds_counts_a_child_process_and_this_one() -> None:
    child = subprocess.Popen([sys.executable, "-c", BUSY_THEN_WAIT], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "busy"
        time.sleep(0.05)
        usage = cpu_seconds()
        assert usage[os.path.basename(sys.executable)] >= 0.25  # 0.3 s, read in clock ticks
        assert usage["generator + bench"] > 0
    finally:
        child.kill()
        child.wait()


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    """``shoppulse bench *args`` as a user runs it, with its own broker and ClickHouse (no configured
    ones from the environment), reusing the Kafka jars the suite fetched; it must succeed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPPULSE_", "CLICKHOUSE_", "KAFKA_"))}
    env["SHOPPULSE_CACHE_DIR"] = str(load_settings().cache_dir)
    result = subprocess.run([sys.executable, "-m", "shoppulse", "bench", *args], env=env, capture_output=True,
                            text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.mark.integration
def test_a_short_run_reports_every_figure_from_its_own_stack() -> None:
    """`shoppulse bench pipeline` starts its own broker, ClickHouse and processors, and prints the
    held rate, lag, per-event latency of both tables, RSS, CPU per process and the ceiling."""
    result = run_bench("pipeline", "--rate", "300", "--seconds", "10")
    out = result.stdout
    sent = int(re.search(r"load: ([\d,]+) events", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert 0.9 * 300 * 10 <= sent <= 1.1 * 300 * 10
    assert re.search(r"through ingestion \+ aggregation \+ sink: [\d,]+ events/s \(caught up \d+ s", out), out
    live = re.search(r"in metrics_live .*whole load p95 (\d+\.\d+) s, (\d+) never counted", out)
    assert live is not None, out
    assert 0 < float(live.group(1)) < 15 and live.group(2) == "0"  # every event counted, each with its latency
    assert re.search(r"in metrics_1s .*whole load p95 \d+\.\d+ s", out), out  # the final windows, too
    cpu = re.search(r"CPU seconds until caught up \(µs per event\): (.*)", out)
    assert cpu is not None and all(name in cpu.group(1) for name in ("ingest", "aggregate", "broker", "clickhouse"))
    busy = re.search(r"CPU cores busy during the load .*: p50 (\d+\.\d+), p95 (\d+\.\d+), max (\d+\.\d+) of", out)
    assert busy is not None and 0 < float(busy.group(1)) <= float(busy.group(2)) <= float(busy.group(3)), out
    assert re.search(r"CPU \{'generator \+ bench': \d+\.\d+, .*'ingest': \d+\.\d+", result.stderr), result.stderr
    assert re.search(r"bare consumer ceiling \(read \+ parse only\): [\d,]+ events/s", out), out


@pytest.mark.integration
def test_the_aggregation_bench_drains_a_clean_backlog_it_sent_first() -> None:
    """`shoppulse bench aggregate` sends a backlog of clean events to its own broker, then starts the
    aggregation alone and measures its rate from its event counter."""
    result = run_bench("aggregate", "--events", "200000", "--seconds", "5")
    found = re.search(r"aggregation: ([\d,]+) events/s \(([\d,]+) events in (\d+) s of a 200,000-event backlog\)",
                      result.stdout)
    assert found is not None, result.stdout
    rate, measured = (int(found.group(i).replace(",", "")) for i in (1, 2))
    assert 0 < measured <= 200_000 - 20_000 and rate > 0  # measured after the first 20,000 (the warm-up)
    assert re.search(r"CPU µs per event: .*aggregate \d+", result.stdout), result.stdout


@pytest.mark.integration
def test_the_floor_bench_copies_every_event_of_its_backlog_and_prices_the_hop() -> None:
    """`shoppulse bench floor` copies a raw backlog with a bare exactly-once Quix Streams application
    and prints its CPU and the broker's per event, and the cores a rate would take at that cost."""
    result = run_bench("floor", "--events", "60000", "--rate", "10000")
    found = re.search(r"copy: ([\d,]+) events/s \(([\d,]+) events in [\d.]+ s of a ([\d,]+)-event backlog\)",
                      result.stdout)
    assert found is not None, result.stdout
    rate, measured, backlog = (int(found.group(i).replace(",", "")) for i in (1, 2, 3))
    assert rate > 0 and measured == backlog - 20_000  # every event after the warm-up went through the copy
    line = re.search(r"CPU µs per event: (.*)", result.stdout)
    assert line is not None, result.stdout
    cpu = {name: int(us) for name, us in re.findall(r"([a-z +]+?) (\d+)(?:, |$)", line.group(1))}
    assert cpu.get("copy app", 0) > 0 and cpu.get("broker", 0) > 0, line.group(0)
    assert re.search(r"10,000 events/s through the pipeline's two such hops .* need at least [\d.]+ cores",
                     result.stdout), result.stdout


class CountingPipeline:
    """Stands in for a scratch pipeline: a processor whose event counter reads ``counts`` in turn."""

    def __init__(self, counts: list[float]) -> None:
        self.counts = counts

    def check_alive(self) -> None:
        pass

    def metric(self, _process: str, _name: str) -> float:
        return self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]


def test_a_drain_is_measured_from_the_first_count_past_the_warm_up() -> None:
    from shoppulse.bench.drain import WARM_EVENTS, drain

    result = drain(CountingPipeline([0, WARM_EVENTS + 5_000, 60_000, 90_000]), "aggregate", "c", 90_000, 30)
    assert result.measured == 90_000 - WARM_EVENTS - 5_000 and result.per_s > 0
    assert result.cpu_s and all(seconds >= 0 for seconds in result.cpu_s.values())
    drained_at_once = drain(CountingPipeline([90_000]), "aggregate", "c", 90_000, 30)  # a backlog too small
    assert drained_at_once.measured == 0 and drained_at_once.cpu_us_per_event() == {}
