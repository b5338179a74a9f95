"""De-duplication of retried events by event id, in Quix Streams state with a bounded time horizon."""

from __future__ import annotations

from datetime import timedelta

from quixstreams.state import State

from shoppulse.events.clean import CleanEvent

DEDUP_HORIZON_MS = 60 * 60 * 1000  # a retry later than this (in event time) is no longer recognised
STATE_TTL = timedelta(milliseconds=DEDUP_HORIZON_MS)  # a session key idle this long is evicted from state
MAX_IDS_PER_KEY = 10_000
SEEN = "seen"


def first_sighting(event: CleanEvent, state: State) -> bool:
    """True the first time an event id is seen for this message key (the shopper's session).

    State maps event id -> event time; ids older than the horizon, measured from the newest
    event of the key, are forgotten, and so is the oldest id beyond MAX_IDS_PER_KEY; a key idle
    for the horizon (in message time) is evicted by Quix's state TTL, so state does not grow with
    the number of sessions ever seen. The
    state is changelogged and committed with the consumer offsets, so a crash and replay
    neither forgets an id nor counts one twice."""
    seen: dict[str, int] = state.get(SEEN) or {}
    event_id = event["event_id"]
    if event_id in seen:
        return False
    event_time = event["event_time_ms"]
    newest = max(event_time, max(seen.values(), default=event_time))
    horizon = newest - DEDUP_HORIZON_MS
    kept = {eid: t for eid, t in seen.items() if t >= horizon}
    kept[event_id] = event_time
    if len(kept) > MAX_IDS_PER_KEY:
        kept.pop(min(kept, key=kept.__getitem__))
    state.set(SEEN, kept, ttl=STATE_TTL)
    return True
