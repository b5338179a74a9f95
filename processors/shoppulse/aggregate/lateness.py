"""Late events, found before the windows so that they are counted rather than silently dropped.

The rule is the one Quix Streams' tumbling windows apply with the "key" closing strategy: an
event is late when its window's start is at or before (newest timestamp of the key - grace -
window duration). Filtering with the same rule in front of the window means the window never
meets a late event, and every late one goes to the late_events table instead."""

from __future__ import annotations

from typing import Any

from quixstreams.state import State

NEWEST = "newest_ms"


class LatenessCheck:
    def __init__(self, window_ms: int, grace_ms: int) -> None:
        self.window_ms = window_ms
        self.grace_ms = grace_ms

    def late_by_ms(self, event: dict[str, Any], state: State) -> int:
        """0 for an on-time event, otherwise how late it is; updates the key's newest timestamp."""
        timestamp = event["event_time_ms"]
        newest = state.get(NEWEST) or 0
        if timestamp > newest:
            state.set(NEWEST, timestamp)
            newest = timestamp
        window_start = timestamp - timestamp % self.window_ms
        if window_start <= newest - self.grace_ms - self.window_ms:
            return max(1, newest - self.grace_ms - timestamp)
        return 0
