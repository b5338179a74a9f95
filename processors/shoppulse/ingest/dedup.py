"""De-duplication of retried events by event id, in Quix Streams state keyed by the shopper's session."""

from __future__ import annotations

from datetime import timedelta

from quixstreams.state import State

ID_BYTES = 16  # an event id is a UUID
MAX_IDS_PER_KEY = 1_000  # a retry more than this many events back in its session is no longer recognised
STATE_TTL = timedelta(hours=1)  # a session key idle this long (in message time) is evicted from state
SEEN = "seen_ids"  # (the older JSON map of ids to times was kept under "seen")


def first_sighting(event_id: bytes, state: State) -> bool:
    """True the first time an event id (its 16 bytes) is seen for this message key (the session).

    State keeps the session's newest MAX_IDS_PER_KEY ids as one byte string of 16-byte ids,
    oldest first: a look-up is a search in C, and the value — written to RocksDB and to the
    changelog topic at every checkpoint the session is active in — is a third the size of a JSON
    map of ids to times (and needs no encoding). A session idle for STATE_TTL is evicted by Quix's
    state TTL, so state does not grow with the number of sessions ever seen. The state is
    changelogged and committed with the consumer offsets, so a crash and replay neither forgets an
    id nor counts one twice."""
    if len(event_id) != ID_BYTES:
        raise ValueError(f"an event id is {ID_BYTES} bytes, got {len(event_id)}")
    seen = state.get_bytes(SEEN) or b""
    found = seen.find(event_id)
    while found != -1:
        if found % ID_BYTES == 0:  # a match across two ids' boundary is not a sighting
            return False
        found = seen.find(event_id, found + 1)
    kept = seen[-(MAX_IDS_PER_KEY - 1) * ID_BYTES:] if len(seen) >= MAX_IDS_PER_KEY * ID_BYTES else seen
    state.set_bytes(SEEN, kept + event_id, ttl=STATE_TTL)
    return True
