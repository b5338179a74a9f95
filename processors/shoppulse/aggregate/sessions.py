"""Shopper sessions for cart abandonment: a session ends after an inactivity gap in event time;
one with an add-to-cart and no purchase is abandoned.

Sessions are tracked in the state of the country-keyed clean stream, not in a session window
keyed by session id. Quix Streams' session windows close a session either when its own key
sees another message (never, for a session id) or by sweeping every key of the partition;
with hundreds of thousands of open sessions and a sweep due almost every message that sweep
grew without bound and stalled the processor after ~10 minutes at 5,000 events/s. Here each
country's state holds its open sessions and an expiry index of one-second buckets, so closing
costs one look-up per due session and one per bucket, whatever the number of open sessions:

* ``session/<id>``: the open sessions of that id, usually one (first and last event time, counts,
  revenue); two while an event more than G after the last one has opened the next but an
  out-of-order event could still bridge them;
* ``due/<second>``: the ids of sessions that may close in that second. A session is indexed
  once, when it opens; one that was extended meanwhile is moved to its new bucket when its
  old one is swept (lazy rescheduling — no index write per event);
* ``session-watermark``, ``session-swept``: the newest event time seen and the last swept bucket.

Rules (gap G, grace R, watermark W = newest event time of the country, R < G):
an event is late for the sessions when ``ts < W - R`` (counted, left out); an event within G of
a session joins it (and merges two it bridges), otherwise it opens a new session of its id; a
session closes once ``W > last + G + R`` — then no on-time event can still reach it. The
result equals splitting each id's events, sorted by time, where two are more than G apart. State lives in Quix's store,
so it is checkpointed with the offsets and recovered from its changelog like any other."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quixstreams.state import State

from shoppulse.events.store_metrics import to_units

# Views are left out of the session pass (70 % of traffic): abandonment depends on cart events only.
SESSION_EVENT_TYPES = frozenset({"add_to_cart", "remove_from_cart", "checkout_start", "payment_attempt", "purchase"})
BUCKET_MS = 1000
WATERMARK = "session-watermark"
SWEPT = "session-swept"
COUNTED = ("events", "cart_adds", "checkouts", "purchases", "revenue_units")


def new_summary(event: dict[str, Any]) -> dict[str, Any]:
    timestamp = event["event_time_ms"]
    return {"session_id": event["session_id"], "country": event["country"], "start": timestamp, "last": timestamp,
            "events": 0, "cart_adds": 0, "checkouts": 0, "purchases": 0, "revenue_units": 0}


def add_event(summary: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """Count one event into a session's summary (in place) and return it."""
    timestamp = event["event_time_ms"]
    summary["start"] = min(summary["start"], timestamp)
    summary["last"] = max(summary["last"], timestamp)
    summary["events"] += 1
    event_type = event["event_type"]
    if event_type == "add_to_cart":
        summary["cart_adds"] += 1
    elif event_type == "checkout_start":
        summary["checkouts"] += 1
    elif event_type == "purchase":
        summary["purchases"] += 1
        summary["revenue_units"] += to_units(event["amount"])
    return summary


def merge(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """One session from sessions of the same id that an event bridges."""
    merged = dict(sessions[0])
    for other in sessions[1:]:
        merged["start"] = min(merged["start"], other["start"])
        merged["last"] = max(merged["last"], other["last"])
        for field in COUNTED:
            merged[field] += other[field]
    return merged


def is_abandoned(summary: dict[str, Any]) -> bool:
    return summary["cart_adds"] > 0 and summary["purchases"] == 0


class SessionTracker:
    """Called with one cart event and the state of its country (a stream keyed by country, see
    ``aggregate.app.EventMarker``); returns the sessions it closed (summaries)."""

    def __init__(self, gap_ms: int, grace_ms: int, on_late: Callable[[dict[str, Any]], None] | None = None) -> None:
        if not 0 <= grace_ms < gap_ms:
            raise ValueError(f"the session grace ({grace_ms} ms) must be shorter than the inactivity gap "
                             f"({gap_ms} ms): an on-time event could otherwise reach a closed session")
        self.gap_ms = gap_ms
        self.grace_ms = grace_ms
        self.on_late = on_late

    def __call__(self, event: dict[str, Any], state: State) -> list[dict[str, Any]]:
        timestamp = event["event_time_ms"]
        watermark = state.get(WATERMARK, 0)
        if timestamp > watermark:
            watermark = timestamp
            state.set(WATERMARK, watermark)
        closed: list[dict[str, Any]] = []
        if timestamp < watermark - self.grace_ms:
            if self.on_late is not None:
                self.on_late(event)
        else:
            self._add(event, state)
        self._sweep(watermark, state, closed)
        return closed

    def _due(self, summary: dict[str, Any]) -> int:
        """The event time after which the session is closed."""
        return summary["last"] + self.gap_ms + self.grace_ms

    def _add(self, event: dict[str, Any], state: State) -> None:
        """Count the event into the session it falls in, merging the two it bridges, or open one."""
        key = f"session/{event['session_id']}"
        timestamp = event["event_time_ms"]
        sessions: list[dict[str, Any]] = state.get(key, [])
        matched: list[dict[str, Any]] = []
        apart: list[dict[str, Any]] = []
        for session in sessions:
            within = session["start"] - self.gap_ms <= timestamp <= session["last"] + self.gap_ms
            (matched if within else apart).append(session)
        sessions = apart
        if matched:
            summary = merge(matched)
        else:
            summary = new_summary(event)
            self._schedule(summary, state)
        sessions.append(add_event(summary, event))
        state.set(key, sorted(sessions, key=lambda s: s["start"]))

    def _schedule(self, summary: dict[str, Any], state: State) -> None:
        bucket = f"due/{self._due(summary) // BUCKET_MS}"
        ids = state.get(bucket, [])
        if summary["session_id"] not in ids:
            ids.append(summary["session_id"])
            state.set(bucket, ids)

    def _sweep(self, watermark: int, state: State, closed: list[dict[str, Any]]) -> None:
        """Close the sessions due before the watermark, bucket by bucket, each bucket once."""
        last_complete = watermark // BUCKET_MS - 1  # every due time in it is below the watermark
        swept = state.get(SWEPT)
        if swept is None:  # the first event of this country: nothing is open before it
            state.set(SWEPT, last_complete)
            return
        for bucket in range(swept + 1, last_complete + 1):
            for session_id in state.get(f"due/{bucket}", []):
                self._close_due(f"session/{session_id}", watermark, state, closed)
            state.delete(f"due/{bucket}")
        if last_complete > swept:
            state.set(SWEPT, last_complete)

    def _close_due(self, key: str, watermark: int, state: State, closed: list[dict[str, Any]]) -> None:
        sessions: list[dict[str, Any]] = state.get(key, [])
        due = [s for s in sessions if self._due(s) < watermark]
        still_open = [s for s in sessions if self._due(s) >= watermark]
        if due:
            closed.extend(due)
            if still_open:
                state.set(key, still_open)
            else:
                state.delete(key)
        if still_open:  # extended since it was indexed, or a later session of the id: due in a later bucket
            self._schedule(min(still_open, key=self._due), state)
