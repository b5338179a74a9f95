"""De-duplication state (unit and property tests over a dict standing in for Quix's ``State``)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoppulse.ingest.dedup import FORMAT_IDS, ID_BYTES, MAX_IDS_PER_KEY, SEEN, STATE_TTL, first_sighting


class BytesState:
    """The part of Quix's ``State`` de-duplication uses; records each write's TTL."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.ttls: list[timedelta | None] = []

    def get_bytes(self, key: str, default: bytes | None = None) -> bytes | None:
        return self.data.get(key, default)

    def set_bytes(self, key: str, value: bytes, ttl: timedelta | None = None) -> None:
        self.data[key] = value
        self.ttls.append(ttl)


def sightings(ids: list[bytes], state: BytesState | None = None) -> list[bool]:
    state = state or BytesState()
    return [first_sighting(event_id, state) for event_id in ids]  # type: ignore[arg-type]


@given(st.lists(st.binary(min_size=ID_BYTES, max_size=ID_BYTES), max_size=60).flatmap(
    lambda ids: st.lists(st.sampled_from(ids), max_size=120) if ids else st.just([])))
def test_an_id_is_a_first_sighting_exactly_once(ids: list[bytes]) -> None:
    assert sightings(ids) == [event_id not in ids[:index] for index, event_id in enumerate(ids)]


def test_a_match_across_two_ids_is_not_a_sighting() -> None:
    first, second = bytes(range(16)), bytes(range(16, 32))
    straddling = first[8:] + second[:8]
    assert sightings([first, second, straddling, straddling]) == [True, True, True, False]


def test_the_session_keeps_its_newest_ids_and_refreshes_its_ttl() -> None:
    state = BytesState()
    ids = [i.to_bytes(ID_BYTES, "big") for i in range(MAX_IDS_PER_KEY + 5)]
    assert all(sightings(ids, state))
    assert len(state.data[SEEN]) == 1 + MAX_IDS_PER_KEY * ID_BYTES
    assert sightings([ids[-1], ids[5], ids[4]], state) == [False, False, True]  # the oldest five are gone
    assert set(state.ttls) == {STATE_TTL}


def test_an_id_that_is_not_16_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        first_sighting(b"short", BytesState())  # type: ignore[arg-type]


def test_values_written_before_the_format_byte_are_still_read() -> None:
    state = BytesState()
    old = bytes(range(16))
    state.data[SEEN] = old  # as stored by an earlier version
    assert sightings([old, bytes(range(1, 17)), old], state) == [False, True, False]
    assert state.data[SEEN][:1] == FORMAT_IDS


@given(st.binary(min_size=ID_BYTES, max_size=ID_BYTES))
def test_no_stored_value_starts_like_a_ttl_stamp(event_id: bytes) -> None:
    """Quix's TTL read path takes a value starting with 0x00 or 0xFF and a plausible epoch-ms for a
    double-stamped one; the format byte rules both out for every id."""
    state = BytesState()
    first_sighting(event_id, state)  # type: ignore[arg-type]
    stored = state.data[SEEN]
    assert stored[0] not in (0x00, 0xFF)
    assert int.from_bytes(stored[:8], "big") >= 2**56  # year 2.3 million as epoch-ms
