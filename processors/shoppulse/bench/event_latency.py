"""Event -> queryable latency of every event of a load, from the counts ClickHouse shows.

The load's events carry their send time as event time, so ClickHouse's count for an event-time
second says how many of that second's events are queryable. Polled every ``POLL_S``, a count
that has grown from ``a`` to ``b`` makes the second's events ``a+1 … b`` — in the order they
were sent — queryable at that poll: each one's latency is the poll time minus its send time.
This is an upper bound by at most one poll interval. The count is exact; which events it
covers is assumed to be the earliest sent: ingestion reads its partitions interleaved and
commits them together, so the order in which events become queryable differs from the order
they were sent by at most a fetch, tens of milliseconds.

Latencies go into 10 ms buckets, so that a 30-minute run's nine million events take constant
memory; a second's send times are kept only until all its events are counted everywhere."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

BUCKET_S = 0.01


class LatencyHistogram:
    """Latencies rounded up to ``BUCKET_S``: nearest-rank percentiles and the maximum."""

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0

    def add(self, latency_s: float) -> None:
        self.buckets[max(0, math.ceil(latency_s / BUCKET_S - 1e-9))] += 1
        self.count += 1

    def percentile(self, q: float) -> float:
        """The smallest bucket bound at or above the ``q`` share of latencies (NaN when empty)."""
        if not self.count:
            return float("nan")
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return bucket * BUCKET_S
        raise AssertionError("unreachable: the buckets hold count latencies")

    def __add__(self, other: LatencyHistogram) -> LatencyHistogram:
        both = LatencyHistogram()
        both.buckets = self.buckets + other.buckets
        both.count = self.count + other.count
        return both

    @property
    def max(self) -> float:
        return max(self.buckets, default=float("nan")) * BUCKET_S if self.count else float("nan")


class EventLatency:
    """Send times of a load's events per event-time second, and the latency of each event once a
    table counts it: one histogram per table for the warm-up (seconds before ``steady_from``) and
    one for the steady state after it."""

    def __init__(self, tables: Iterable[str], steady_from: int) -> None:
        self.tables = tuple(tables)
        self.steady_from = steady_from
        self.sent_at: dict[int, list[float]] = {}
        self._counted: dict[str, dict[int, int]] = {table: {} for table in self.tables}
        self.steady = {table: LatencyHistogram() for table in self.tables}
        self.warm_up = {table: LatencyHistogram() for table in self.tables}

    def sent(self, at: float) -> None:
        """One event sent at ``at`` (epoch seconds), which is also its event time. Called from the
        load's thread: appending to a list is atomic under the GIL."""
        times = self.sent_at.get(int(at))
        if times is None:
            times = self.sent_at[int(at)] = []
        times.append(at)

    def waiting(self, table: str) -> list[int]:
        """The seconds with events ``table`` has not counted yet."""
        counted = self._counted[table]
        return [second for second, times in list(self.sent_at.items()) if counted.get(second, 0) < len(times)]

    def counted(self, table: str, second: int, visible: int, at: float) -> None:
        """``table`` counted ``visible`` events of ``second`` at ``at``."""
        times = self.sent_at.get(second, [])
        before = self._counted[table].get(second, 0)
        now = min(visible, len(times))
        if now <= before:
            return
        histogram = (self.steady if second >= self.steady_from else self.warm_up)[table]
        for sent in times[before:now]:
            histogram.add(at - sent)
        self._counted[table][second] = now

    def forget_done(self, now: float) -> None:
        """Drop the seconds every table has counted whole, once no event of theirs can still be sent."""
        for second, times in list(self.sent_at.items()):
            if second + 2 <= now and all(self._counted[t].get(second, 0) >= len(times) for t in self.tables):
                del self.sent_at[second]
                for counted in self._counted.values():
                    counted.pop(second, None)

    def whole(self, table: str) -> LatencyHistogram:
        """The latencies of ``table`` over the whole load, warm-up included."""
        return self.warm_up[table] + self.steady[table]

    def not_counted(self, table: str) -> int:
        """Events sent that ``table`` has not counted (yet)."""
        return sum(len(times) - self._counted[table].get(second, 0) for second, times in list(self.sent_at.items()))
