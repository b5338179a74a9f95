"""One processor draining a backlog (`shoppulse bench ingest`, `shoppulse bench aggregate`): its
rate from its own event counter once it is past its start-up, and every process's CPU meanwhile."""

from __future__ import annotations

import time
from dataclasses import dataclass

from shoppulse.bench.pipeline import cpu_seconds, cpu_seconds_since
from shoppulse.devstack.scratch import ScratchPipeline

WARM_EVENTS = 20_000  # start measuring once this many are in: the consumer group and state are up
POLL_S = 0.2


@dataclass(frozen=True)
class DrainResult:
    """A processor draining a backlog: how many events it got through, and at what cost."""

    events: int  # in the backlog
    measured: float  # events counted over the measured span
    seconds: float
    cpu_s: dict[str, float]  # CPU seconds of each process over the measured span

    @property
    def per_s(self) -> float:
        return self.measured / self.seconds if self.seconds else 0.0

    def cpu_us_per_event(self) -> dict[str, float]:
        if not self.measured:
            return {}
        return {process: 1e6 * seconds / self.measured for process, seconds in self.cpu_s.items()}


def drain(pipeline: ScratchPipeline, process: str, counter: str, sent: int, seconds: float) -> DrainResult:
    """How ``process`` (counting its events in the Prometheus sample ``counter``) gets through the
    ``sent`` events of a backlog: measured from its first count past WARM_EVENTS, for ``seconds``
    or until it has them all. Measured is 0 when it had them all by that first count (a backlog
    too small for the processor's speed)."""

    def events_in() -> float:
        return pipeline.metric(process, counter) or 0.0

    while (first := events_in()) < WARM_EVENTS:
        pipeline.check_alive()
        time.sleep(POLL_S)
    started, cpu = time.monotonic(), cpu_seconds()
    last = first
    while time.monotonic() - started < seconds and last < sent:
        pipeline.check_alive()
        time.sleep(POLL_S)
        last = events_in()
    return DrainResult(sent, last - first, time.monotonic() - started, cpu_seconds_since(cpu))
