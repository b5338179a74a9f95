"""The session tracker closes exactly the sessions a straightforward recomputation finds: events
of one id, sorted by time, split where the gap between two is longer than the inactivity gap.
Property-based over event streams with disorder up to the grace period; the tracker's state is a
plain dict here, the real Quix store is exercised by tests/test_aggregation.py."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoppulse.aggregate.sessions import SessionTracker

GAP_MS, GRACE_MS = 10_000, 2_000


class DictState:
    """The part of Quix's ``State`` the session tracker uses, over a dict (one country)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def event(session: str, ts: int, event_type: str = "add_to_cart") -> dict[str, Any]:
    return {"session_id": session, "country": "DE", "event_time_ms": ts, "event_type": event_type,
            "amount": "10.00"}


def run(tracker: SessionTracker, events: list[dict[str, Any]], state: DictState) -> list[dict[str, Any]]:
    closed: list[dict[str, Any]] = []
    for e in events:
        closed += tracker(e, state)
    return closed


def recompute(events: list[dict[str, Any]]) -> set[tuple[str, int, int, int]]:
    by_id: dict[str, list[int]] = defaultdict(list)
    for e in events:
        by_id[e["session_id"]].append(e["event_time_ms"])
    sessions = set()
    for session, times in by_id.items():
        times.sort()
        group = [times[0]]
        for ts in times[1:]:
            if ts - group[-1] > GAP_MS:
                sessions.add((session, group[0], group[-1], len(group)))
                group = []
            group.append(ts)
        sessions.add((session, group[0], group[-1], len(group)))
    return sessions


@st.composite
def disordered_streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Events in time order with small steps, then each moved back by up to the grace period."""
    count = draw(st.integers(1, 120))
    steps = draw(st.lists(st.integers(0, 4_000), min_size=count, max_size=count))
    ids = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=count, max_size=count))
    jitter = draw(st.lists(st.integers(0, GRACE_MS), min_size=count, max_size=count))
    times, now = [], 1_000_000
    for step in steps:
        now += step
        times.append(now)
    # Arrival order is time order; each event's own timestamp is up to the grace period older.
    return [event(s, max(t - j, times[max(0, i - 1)] - GRACE_MS)) for i, (s, t, j) in
            enumerate(zip(ids, times, jitter, strict=True))]


@given(disordered_streams())
@settings(max_examples=300, deadline=None)
def test_closed_sessions_equal_the_recomputation(events: list[dict[str, Any]]) -> None:
    tracker = SessionTracker(GAP_MS, GRACE_MS)
    state = DictState()
    newest = max(e["event_time_ms"] for e in events)
    closer = event("closer", newest + 3 * GAP_MS)
    closed = run(tracker, [*events, closer], state)
    got = {(s["session_id"], s["start"], s["last"], s["events"]) for s in closed}
    assert got == recompute(events)
    assert len(closed) == len(got)  # no session closed twice
    # Only the closer's session and the bookkeeping remain: nothing else is held open.
    assert [k for k in state.data if k.startswith("session/")] == ["session/closer"]


def test_a_session_stays_open_until_the_watermark_passes_gap_and_grace() -> None:
    tracker, state = SessionTracker(GAP_MS, GRACE_MS), DictState()
    assert run(tracker, [event("a", 0), event("b", 5_000), event("b", GAP_MS + GRACE_MS)], state) == []
    closed = run(tracker, [event("b", GAP_MS + GRACE_MS + 1_001)], state)
    assert [(s["session_id"], s["start"], s["last"]) for s in closed] == [("a", 0, 0)]


def test_an_event_later_than_the_grace_is_counted_and_left_out() -> None:
    late: list[dict[str, Any]] = []
    tracker, state = SessionTracker(GAP_MS, GRACE_MS, on_late=late.append), DictState()
    run(tracker, [event("a", 10_000), event("a", 10_000 - GRACE_MS - 1)], state)
    assert [e["event_time_ms"] for e in late] == [10_000 - GRACE_MS - 1]
    assert [s["events"] for s in state.get("session/a")] == [1]


def test_purchase_makes_a_session_converted_not_abandoned() -> None:
    tracker, state = SessionTracker(GAP_MS, GRACE_MS), DictState()
    closed = run(tracker, [event("a", 0), event("a", 1_000, "purchase"), event("z", 3 * GAP_MS)], state)
    assert closed[0]["cart_adds"] == 1 and closed[0]["purchases"] == 1 and closed[0]["revenue_units"] > 0


def test_a_grace_as_long_as_the_gap_is_refused() -> None:
    with pytest.raises(ValueError, match="shorter than the inactivity gap"):
        SessionTracker(GAP_MS, GAP_MS)
