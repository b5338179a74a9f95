"""`shoppulse bench pipeline`: events/s through ingestion + aggregation + sink at a held load, with
consumer lag and RSS over time, event -> queryable latency, and — in the same run — the rate of a
bare consumer that only reads and parses the same events, as the ceiling.

Latency is measured on every event of the load itself, which has no late or out-of-order events:
from when it was sent until ClickHouse counts it — in ``metrics_live`` (provisional sums, written
at each ingestion checkpoint) and in ``metrics_1s`` (final windows, after the grace period); see
``bench.event_latency``. The events of the first ``WARM_UP_S`` seconds, while the consumer groups
form and the processors warm up, are reported apart from the steady state."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import KafkaError
from quixstreams.kafka import Consumer

from shoppulse import clickhouse
from shoppulse.bench.event_latency import EventLatency
from shoppulse.devstack.process import ManagedProcess
from shoppulse.devstack.scratch import scratch_pipeline
from shoppulse.events.store_metrics import FUNNEL_EVENT_TYPES
from shoppulse.loadgen.generator import Emission, EventStream
from shoppulse.loadgen.run import make_producer, run_live
from shoppulse.settings import Settings
from shoppulse.topics import RAW_EVENTS

GROUPS = {"ingest": "shoppulse-ingest", "aggregate": "shoppulse-aggregate"}
SOURCES = {"ingest": RAW_EVENTS.name, "aggregate": "shop.events.clean"}  # lag is measured on these
SAMPLE_EVERY_S = 2.0
# How often each table is polled: a latency is an upper bound by at most this. The polls run on the
# machine they measure (~5 ms of ClickHouse CPU each), and metrics_1s lags by its grace period anyway.
LATENCY_POLL_S = {"metrics_live": 0.1, "metrics_1s": 0.5}
LATENCY_TABLES = tuple(LATENCY_POLL_S)
WARM_UP_S = 30  # seconds of load before latency counts as steady state
EVENT_COUNT = "product_views + cart_adds + cart_removes + checkouts + payment_attempts + orders"  # one per funnel event


class TimedStream(EventStream):
    """The load's event stream, recording the send time (its event time) of each event the metrics tables count
    (``EVENT_COUNT``: the funnel's; a paid click or a refund counts in the segments only)."""

    def __init__(self, rate: float, seed: int, latency: EventLatency) -> None:
        super().__init__(rate, seed=seed)
        self.latency = latency

    def next(self, now: datetime) -> Emission:
        emission = super().next(now)
        if emission.event_type in FUNNEL_EVENT_TYPES:
            self.latency.sent(now.timestamp())
        return emission


@dataclass
class Sample:
    elapsed_s: float
    ingested_per_s: float
    aggregated_per_s: float
    lag: dict[str, int]
    rss_mb: dict[str, float]
    cpu_cores: dict[str, float]  # CPU time per second since the last sample, per process (2 = both cores)


@dataclass
class PipelineResult:
    target_rate: float
    sent: int
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    latency: EventLatency = field(default_factory=lambda: EventLatency(LATENCY_TABLES, 0))
    ceiling_per_s: float = 0.0

    caught_up_s: float = 0.0  # when aggregation had consumed everything the load sent
    cpu_s: dict[str, float] = field(default_factory=dict)  # per process, from the start until caught up

    @property
    def sustained_per_s(self) -> float:
        """Events through the whole pipeline per second, from the start until it caught up."""
        return self.sent / self.caught_up_s if self.caught_up_s else 0.0

    @property
    def during_load(self) -> list[Sample]:
        return [s for s in self.samples if s.elapsed_s <= self.seconds]


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process — the load generator and the
    bench's own polling — and by each process it started (broker, ClickHouse, processors)."""
    ticks = os.sysconf("SC_CLK_TCK")
    mine = os.times()
    usage = {"generator + bench": mine.user + mine.system}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
            if int(fields[1]) == os.getpid():  # the parent pid
                name = _process_name((stat.parent / "cmdline").read_bytes().split(b"\0"))
                usage[name] = usage.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return usage


def cpu_seconds_since(before: dict[str, float]) -> dict[str, float]:
    """``cpu_seconds()`` used since ``before`` (an earlier ``cpu_seconds()``), per process."""
    return {name: used - before.get(name, 0.0) for name, used in cpu_seconds().items()}


def _process_name(argv: list[bytes]) -> str:
    words = [word.decode(errors="replace") for word in argv if word]
    if words and words[0].endswith("java"):
        return "broker"
    if "shoppulse" in words:  # python -m shoppulse <command> ...
        command = words[words.index("shoppulse") + 1:]
        return command[0] if command else "shoppulse"
    return os.path.basename(words[0]) if words else "?"


def committed(admin: KafkaAdminClient, group: str) -> dict:
    with contextlib.suppress(Exception):
        return {tp: meta.offset for tp, meta in admin.list_group_offsets([group])[group].items()}
    return {}


def bare_consumer_rate(bootstrap: str, expected: int) -> float:
    """Events/s of a consumer that only reads and parses the raw topic (the ceiling)."""
    consumer = Consumer(broker_address=bootstrap, consumer_group=f"bench-ceiling-{secrets.token_hex(4)}",
                        auto_offset_reset="earliest", auto_commit_enable=False)
    consumer.subscribe([RAW_EVENTS.name])
    count, started, idle = 0, None, 0
    try:
        while count < expected and idle < 20:
            message = consumer.poll(0.5)
            if message is None:
                idle += 1
                continue
            idle = 0
            started = started or time.perf_counter()
            payload = message.value()
            if payload:
                with contextlib.suppress(ValueError):
                    json.loads(payload)
            count += 1
        return count / (time.perf_counter() - started) if started else 0.0
    finally:
        consumer.close()


def measure(settings: Settings, rate: float, seconds: float,
            report: Callable[[str], None] = lambda _: None) -> PipelineResult:
    with scratch_pipeline(settings, tuple(GROUPS), report=report) as pipeline:
        report("processors starting…")
        time.sleep(8)
        return _run_load(pipeline.settings, pipeline.bootstrap, rate, seconds, pipeline.processes, report)


def _run_load(settings: Settings, bootstrap: str, rate: float, seconds: float,
              processors: dict[str, ManagedProcess], report: Callable[[str], None]) -> PipelineResult:
    latency = EventLatency(LATENCY_TABLES, steady_from=int(time.time()) + WARM_UP_S)
    result = PipelineResult(rate, 0, seconds, latency=latency)
    done = threading.Event()
    stream = TimedStream(rate, seed=3, latency=latency)

    def load() -> None:
        final = run_live(make_producer(bootstrap), stream, rate, duration_s=seconds)
        result.sent, result.seconds = final.sent, final.elapsed_s
        done.set()

    gc.freeze()  # what the bench built so far lives as long as it: full collections need not scan it
    threading.Thread(target=load, daemon=True).start()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    ends = KafkaConsumer(bootstrap_servers=bootstrap)
    # The polls are small reads on the machine being measured: one thread each spares the engine
    # scheduling a pool of them per query.
    client = clickhouse.connect(settings, max_threads=1)
    started = time.monotonic()
    last = {"t": started, "ingest": 0, "aggregate": 0, "cpu": cpu_seconds()}
    next_poll = dict.fromkeys(LATENCY_TABLES, started)
    next_sample = started + SAMPLE_EVERY_S
    try:
        while not done.is_set() or not result.caught_up_s:
            if time.monotonic() - started > seconds + 120:
                break  # never caught up: the figures say so
            now = time.monotonic()
            due = [table for table, at in next_poll.items() if now >= at]
            _poll_latency(client, latency, due)
            next_poll.update({table: now + LATENCY_POLL_S[table] for table in due})
            if time.monotonic() >= next_sample:
                next_sample += SAMPLE_EVERY_S
                result.samples.append(_sample(admin, ends, processors, last, started))
                s = result.samples[-1]
                if done.is_set() and s.lag["ingest"] + s.lag["aggregate"] <= 2 * len(s.lag) * 6:
                    result.caught_up_s = s.elapsed_s  # within the transaction markers of each partition
                report(f"{s.elapsed_s:5.0f} s  ingested {s.ingested_per_s:8,.0f}/s  aggregated "
                       f"{s.aggregated_per_s:8,.0f}/s  lag {s.lag}  RSS MB {s.rss_mb}  CPU {s.cpu_cores}")
            time.sleep(min(LATENCY_POLL_S.values()))
        _poll_latency(client, latency, LATENCY_TABLES)  # what the last checkpoints wrote
    finally:
        client.close()
        ends.close()
        admin.close()
    result.cpu_s = cpu_seconds()
    report("measuring the bare consumer ceiling…")
    result.ceiling_per_s = bare_consumer_rate(bootstrap, result.sent)
    return result


def _poll_latency(client: Any, latency: EventLatency, tables: Iterable[str]) -> None:
    """Count the events each of ``tables`` shows of the seconds still waiting (not the whole run's:
    constant work as the run goes on), in one query for all of them: the bench's polling runs on
    the machine it measures."""
    waiting = {table: seconds for table in tables if (seconds := latency.waiting(table))}
    if not waiting:
        return
    union = " UNION ALL ".join(
        f"SELECT '{table}', toUnixTimestamp(ts), sum({EVENT_COUNT}) FROM {table} "
        f"WHERE ts >= fromUnixTimestamp({{since_{i}:UInt32}}) GROUP BY ts" for i, table in enumerate(waiting))
    since = {f"since_{i}": min(seconds) for i, seconds in enumerate(waiting.values())}
    visible: dict[str, dict[int, int]] = {table: {} for table in waiting}
    for table, second, count in client.query(union, parameters=since).result_rows:
        visible[table][int(second)] = int(count)
    now = time.time()
    for table, seconds in waiting.items():
        for second in seconds:
            latency.counted(table, second, visible[table].get(second, 0), now)
    latency.forget_done(now)


def _sample(admin: KafkaAdminClient, ends: KafkaConsumer, processors: dict[str, ManagedProcess],
            last: dict, started: float) -> Sample:
    now = time.monotonic()
    lag, done = {}, {}
    for name, group in GROUPS.items():
        offsets = {tp: o for tp, o in committed(admin, group).items() if tp.topic == SOURCES[name]}
        try:
            end_offsets = ends.end_offsets(list(offsets)) if offsets else {}
        except (KafkaError, KeyError):  # topic metadata not known yet
            end_offsets = dict.fromkeys(offsets, 0)
        lag[name] = sum(max(0, end_offsets[tp] - o) for tp, o in offsets.items())
        done[name] = sum(offsets.values())
    seconds = now - last["t"]
    cpu = cpu_seconds()
    sample = Sample(now - started, (done["ingest"] - last["ingest"]) / seconds,
                    (done["aggregate"] - last["aggregate"]) / seconds, lag,
                    {n: round(rss_mb(p.pid), 1) for n, p in processors.items()},
                    {n: round((used - last["cpu"].get(n, 0.0)) / seconds, 2) for n, used in cpu.items()})
    last.update({"t": now, "cpu": cpu, **done})
    return sample


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


