"""`shoppulse bench loadgen`: the rate the load generator achieves at each target, into a real broker,
beside the generator's own ceiling (events built and serialised, nothing sent) in the same run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from shoppulse.loadgen.generator import EventStream
from shoppulse.loadgen.run import make_producer, run_live
from shoppulse.topics import TopicSpec, create_topics

BENCH_TOPIC = TopicSpec("bench.events.raw", "load generator benchmark")


@dataclass(frozen=True)
class RateResult:
    target: float
    achieved: float
    sent: int
    seconds: float


def generator_ceiling(seconds: float, rate_hint: float = 50_000) -> float:
    """Events/s the generator builds on one core with nothing sent."""
    stream = EventStream(rate_hint, seed=1)
    now = datetime.now(UTC)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(1000):
            stream.next(now)
        count += 1000
    return count / (time.perf_counter() - start)


def measure(bootstrap: str, targets: list[float], seconds: float,
            report: Callable[[str], None] = lambda _: None) -> tuple[list[RateResult], float]:
    create_topics(bootstrap, 6, specs=(BENCH_TOPIC,))
    results = []
    for target in targets:
        producer = make_producer(bootstrap)
        stream = EventStream(target, seed=7)
        report(f"holding {target:,.0f} events/s for {seconds:.0f} s…")
        final = run_live(producer, stream, target, duration_s=seconds, topic=BENCH_TOPIC.name)
        results.append(RateResult(target, final.sent / final.elapsed_s, final.sent, final.elapsed_s))
    report("measuring the generator's own ceiling…")
    return results, generator_ceiling(min(seconds, 10.0))
