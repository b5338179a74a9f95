"""De-duplication of retried events by event id, in Quix Streams state keyed by the shopper's session."""

from __future__ import annotations

from datetime import timedelta

from quixstreams.state import State

ID_BYTES = 16  # an event id is a UUID
MAX_IDS_PER_KEY = 1_000  # a retry more than this many events back in its session is no longer recognised
STATE_TTL = timedelta(hours=1)  # a session key idle this long (in message time) is evicted from state
SEEN = "seen_ids"  # (the older JSON map of ids to times was kept under "seen")
# The stored value's first byte: the format of what follows (1: 16-byte ids, oldest first). Also what keeps
# Quix's TTL bookkeeping from misreading it: quixstreams 3.28's read path takes a value whose first bytes
# look like an epoch-ms stamp (a leading 0x00 or 0xFF and a plausible time, e.g. an id starting
# 0x000000DC..0x00000480) for a double-stamped one and strips or expires 8 bytes of it.
FORMAT_IDS = b"\x01"


def first_sighting(event_id: bytes, state: State) -> bool:
    """True the first time an event id (its 16 bytes) is seen for this message key (the session).

    State keeps the session's newest MAX_IDS_PER_KEY ids as one byte string of 16-byte ids,
    oldest first, behind a format byte (``FORMAT_IDS``): a look-up is a search in C, and the value
    — written to RocksDB and to the changelog topic at every checkpoint the session is active in —
    is a third the size of a JSON map of ids to times (and needs no encoding). A session idle for
    STATE_TTL is evicted by Quix's state TTL, so state does not grow with the number of sessions ever seen. The state is
    changelogged and committed with the consumer offsets, so a crash and replay neither forgets an
    id nor counts one twice."""
    if len(event_id) != ID_BYTES:
        raise ValueError(f"an event id is {ID_BYTES} bytes, got {len(event_id)}")
    seen = _ids(state.get_bytes(SEEN))
    found = seen.find(event_id)
    while found != -1:
        if found % ID_BYTES == 0:  # a match across two ids' boundary is not a sighting
            return False
        found = seen.find(event_id, found + 1)
    kept = seen[-(MAX_IDS_PER_KEY - 1) * ID_BYTES:] if len(seen) >= MAX_IDS_PER_KEY * ID_BYTES else seen
    state.set_bytes(SEEN, FORMAT_IDS + kept + event_id, ttl=STATE_TTL)
    return True


def _ids(stored: bytes | None) -> bytes:
    """The ids of a stored value: FORMAT_IDS and ids, or (written before the format byte) ids alone."""
    if not stored:
        return b""
    if len(stored) % ID_BYTES == 1 and stored[:1] == FORMAT_IDS:
        return stored[1:]
    return stored
