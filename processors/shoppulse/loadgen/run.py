"""Sending the event stream to Kafka: live at a held rate, a fixed count, or replaying past days."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from quixstreams.kafka import Producer

from shoppulse.loadgen.generator import BadInput, EventStream
from shoppulse.loadgen.phenomena import schedule_phenomena
from shoppulse.loadgen.scenario import Scenario, schedule, write_ground_truth
from shoppulse.topics import RAW_EVENTS

log = logging.getLogger(__name__)

MIN_RATE, MAX_RATE = 10, 50_000
TICK_S = 0.005
MAX_BURST = 5_000  # events per tick at most, so that progress keeps being reported
POLL_EVERY = 2_000
# A shop's producer batches like the processors' (streaming.BATCHING_PRODUCER_CONFIG): at 5,000 events/s
# a 25 ms linger makes a fifth of the produce requests of 5 ms (broker 87-93 -> 80 µs of CPU per event in
# `shoppulse bench pipeline --rate 5000 --seconds 90`), for 20 ms more before an event reaches the broker.
PRODUCER_CONFIG = {"linger.ms": 25, "batch.size": 1_000_000, "compression.type": "lz4", "acks": "all",
                   "enable.idempotence": True, "queue.buffering.max.messages": 500_000}


@dataclass
class Progress:
    sent: int
    elapsed_s: float
    rate_last_s: float
    target_rate: float


def make_producer(bootstrap: str) -> Producer:
    return Producer(broker_address=bootstrap, extra_config=PRODUCER_CONFIG)


def run_live(producer: Producer, stream: EventStream, rate: float, *, duration_s: float | None = None,
             count: int | None = None, report: Callable[[Progress], None] = lambda _: None,
             should_stop: Callable[[], bool] = lambda: False, topic: str = RAW_EVENTS.name) -> Progress:
    """Emit ``rate`` events/s (times the stream's load: a flash sale adds shoppers) until
    ``duration_s`` passed, ``count`` were sent, or ``should_stop``.

    The schedule is absolute (the events due by now are what the held rate has accumulated since
    the start), so a slow moment is caught up rather than lost; the achieved rate is what was
    really sent per second."""
    start = time.monotonic()
    sent = 0
    last_report, sent_at_report = start, 0
    rate_last = 0.0
    owed, owed_at = 0.0, start  # events due since the start
    while not should_stop():
        now_mono = time.monotonic()
        elapsed = now_mono - start
        if duration_s is not None and elapsed >= duration_s:
            break
        if count is not None and sent >= count:
            break
        now = datetime.now(UTC)
        load = stream.load(now)
        owed += rate * load * (now_mono - owed_at)
        owed_at = now_mono
        due = int(owed) + 1 - sent
        if count is not None:
            due = min(due, count - sent)
        if due <= 0 or load == 0:  # nothing due, or a second the feed loses
            time.sleep(TICK_S)
            continue
        for _ in range(min(due, MAX_BURST)):
            emission = stream.next(now)
            producer.produce(topic, emission.value, emission.key)
            sent += 1
            if sent % POLL_EVERY == 0:
                producer.poll(0)
        if now_mono - last_report >= 1.0:
            rate_last = (sent - sent_at_report) / (now_mono - last_report)
            last_report, sent_at_report = now_mono, sent
            report(Progress(sent, elapsed, rate_last, rate))
    producer.flush()
    final = Progress(sent, time.monotonic() - start, rate_last, rate)
    report(final)
    return final


def run_replay(producer: Producer, stream: EventStream, rate: float, start: datetime, end: datetime, *,
               report: Callable[[float, int], None] = lambda _fraction, _sent: None,
               topic: str = RAW_EVENTS.name) -> int:
    """Backfill the history from ``start`` to ``end``: each simulated second carries ``rate`` times the
    stream's load events (a seasonal stream's follows the time of the week), sent as fast as the broker
    takes them, each message stamped with its simulated time."""
    total_s = int((end - start).total_seconds())
    sent = 0
    carry = 0.0
    for second in range(total_s):
        sim = start + timedelta(seconds=second)
        carry += rate * stream.load(sim)
        n, carry = int(carry), carry - int(carry)
        for i in range(n):
            emission = stream.next(sim + timedelta(milliseconds=1000 * i // max(n, 1)))
            producer.produce(topic, emission.value, emission.key,
                             timestamp=int((sim.timestamp() + i / max(n, 1)) * 1000))
            sent += 1
            if sent % POLL_EVERY == 0:
                producer.poll(0)
        if second % 60 == 0:
            report(second / total_s, sent)
    producer.flush()
    report(1.0, sent)
    return sent


def new_stream(rate: float, scenario: Scenario | None, run_start: datetime, ground_truth: Path | None,
               bad: BadInput, seed: int | None, record_pii: bool = False, seasonal: bool = False) -> EventStream:
    """The stream of ``scenario`` started at ``run_start``; its incidents' and phenomena's ground truth is
    appended to ``ground_truth``. ``seasonal``: the store's volume follows the time of the week (a replay)."""
    incidents = schedule(scenario, run_start) if scenario else []
    phenomena = schedule_phenomena(scenario.phenomena, run_start) if scenario else []
    if ground_truth is not None and (incidents or phenomena):
        write_ground_truth(ground_truth, incidents, phenomena)
    return EventStream(rate, incidents, bad, seed, record_pii, phenomena=phenomena, seasonal=seasonal)
