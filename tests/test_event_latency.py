"""The pipeline benchmark's per-event latency: events become queryable in the order they were
sent, at the first poll whose count covers them; percentiles are nearest-rank over 10 ms buckets."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from shoppulse.bench.event_latency import BUCKET_S, EventLatency, LatencyHistogram


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@given(st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), min_size=1, max_size=300),
       st.sampled_from([0.5, 0.9, 0.95, 0.99, 1.0]))
def test_percentiles_are_nearest_rank_within_one_bucket(latencies: list[float], q: float) -> None:
    histogram = LatencyHistogram()
    for latency in latencies:
        histogram.add(latency)
    exact = nearest_rank(latencies, q)
    assert exact - 1e-9 <= histogram.percentile(q) <= exact + BUCKET_S + 1e-9
    assert max(latencies) - 1e-9 <= histogram.max <= max(latencies) + BUCKET_S + 1e-9
    assert histogram.count == len(latencies)


def test_an_empty_histogram_has_no_percentile() -> None:
    assert math.isnan(LatencyHistogram().percentile(0.95))
    assert math.isnan(LatencyHistogram().max)


@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=40), st.data())
def test_each_event_is_queryable_at_the_first_poll_that_counts_it(gaps_ms: list[int], data: st.DataObject) -> None:
    """Events sent over ~2 s; polls see a count that never shrinks and ends at all of them. Each
    event's latency is the first poll whose count reaches its position in its second, minus its
    send time — computed here the slow way, event by event."""
    start = 1_000.0
    sent = []
    for gap in gaps_ms:
        sent.append((sent[-1] if sent else start) + gap / 1000)
    tracker = EventLatency(["t"], steady_from=0)
    for at in sent:
        tracker.sent(at)
    by_second: dict[int, list[float]] = {}
    for at in sent:
        by_second.setdefault(int(at), []).append(at)
    polls = []
    counts = {second: 0 for second in by_second}
    poll_at = sent[-1]
    partial_polls = data.draw(st.integers(min_value=0, max_value=5))
    for poll in range(partial_polls + 1):
        poll_at += data.draw(st.floats(min_value=0.01, max_value=0.5))
        for second, times in by_second.items():
            last = poll == partial_polls  # the last poll counts everything
            counts[second] = len(times) if last else data.draw(st.integers(counts[second], len(times)))
        polls.append((poll_at, dict(counts)))
    for poll_at, seen in polls:
        for second in tracker.waiting("t"):
            tracker.counted("t", second, seen[second], poll_at)
    expected = []
    for second, times in by_second.items():
        for position, at in enumerate(times, start=1):
            first = next(t for t, seen in polls if seen[second] >= position)
            expected.append(first - at)
    got = tracker.steady["t"]
    assert got.count == len(sent)
    assert tracker.not_counted("t") == 0
    for q in (0.5, 0.95, 1.0):
        exact = nearest_rank(expected, q)
        assert exact - 1e-6 <= got.percentile(q) <= exact + BUCKET_S + 1e-6


def test_warm_up_is_apart_and_counted_seconds_are_forgotten() -> None:
    tracker = EventLatency(["live", "final"], steady_from=11)
    for at in (10.2, 10.7, 11.1, 11.3):
        tracker.sent(at)
    assert tracker.waiting("live") == [10, 11]
    tracker.counted("live", 10, 2, 11.2)
    tracker.counted("live", 11, 1, 11.6)
    tracker.counted("live", 11, 1, 11.9)  # no new event counted: nothing added twice
    assert tracker.warm_up["live"].count == 2 and tracker.steady["live"].count == 1
    assert math.isclose(tracker.steady["live"].max, 0.5)
    assert tracker.waiting("live") == [11]
    assert tracker.not_counted("final") == 4
    tracker.forget_done(now=14)
    assert set(tracker.sent_at) == {10, 11}  # "final" has counted none of them yet
    tracker.counted("final", 10, 2, 14.5)
    tracker.forget_done(now=14.5)
    assert set(tracker.sent_at) == {11}
    assert tracker.whole("final").count == 2 and tracker.not_counted("final") == 2
