"""The endpoint's Native output re-framed for a client's protocol revision (devstack/native_format.py)."""

from __future__ import annotations

import chdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoppulse.devstack.native_format import NativeFormatError, NativeReviser, split_type

SQL = ("SELECT number AS n, toString(number) AS s, [number, 2] AS a, if(number % 3 = 0, NULL, number) AS maybe, "
       "toLowCardinality(toString(number % 4)) AS lc, (number, 'x') AS t, map('k', number) AS m, "
       "toDecimal64(number, 2) AS d, toDateTime64(number, 3, 'UTC') AS ts FROM numbers(5000)")
NATIVE = chdb.query(SQL, "Native").bytes()
BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"


def revised(data: bytes, revision: int, cuts: list[int] | None = None) -> bytes:
    reviser = NativeReviser(revision)
    out, start = b"", 0
    for cut in [*sorted(cuts or []), len(data)]:
        out += reviser.feed(data[start:cut])
        start = cut
    reviser.finish()
    return out


def test_revision_zero_leaves_the_engines_blocks_as_they_are() -> None:
    assert revised(NATIVE, 0) == NATIVE


def test_a_client_revision_gets_block_info_and_the_serialization_flag() -> None:
    out = revised(NATIVE, 54460)
    assert out.startswith(BLOCK_INFO + b"\x09")  # BlockInfo, then 9 columns
    assert len(out) == len(NATIVE) + out.count(BLOCK_INFO) * len(BLOCK_INFO) + 9 * out.count(BLOCK_INFO)
    before_flag = revised(NATIVE, 54453)  # below the custom serialization revision: BlockInfo only
    assert len(before_flag) == len(NATIVE) + before_flag.count(BLOCK_INFO) * len(BLOCK_INFO)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(NATIVE)), max_size=8))
def test_pieces_of_any_size_give_the_same_bytes(cuts: list[int]) -> None:
    assert revised(NATIVE, 54460, cuts) == revised(NATIVE, 54460)


@pytest.mark.parametrize("sql", [
    "SELECT CAST([], 'Array(LowCardinality(String))') AS empty",  # the keys' version, and no values after it
    "SELECT CAST(if(number % 2 = 0, [], ['a', 'b', 'c']), 'Array(LowCardinality(String))') AS x FROM numbers(4)",
    "SELECT CAST(map('k', toString(number)), 'Map(String, LowCardinality(String))') AS m FROM numbers(3)",
    "SELECT CAST((number, toString(number)), 'Tuple(UInt64, LowCardinality(Nullable(String)))') AS t FROM numbers(3)",
    "SELECT CAST([[], ['x']], 'Array(Array(LowCardinality(String)))') AS nested",
])
def test_low_cardinality_nested_anywhere_keeps_its_state_prefix_first(sql: str) -> None:
    """A LowCardinality column's keys version is a state prefix, written before the data of the column
    it is nested in (before an array's offsets), also when no value of it follows."""
    data = chdb.query(sql, "Native").bytes()
    out = revised(data, 54460)
    columns = data[0]  # one block here: its first byte is its column count
    assert len(out) == len(data) + len(BLOCK_INFO) + columns


def test_a_result_cut_inside_a_block_is_an_error() -> None:
    with pytest.raises(NativeFormatError, match="ended inside a block"):
        revised(NATIVE[:-3], 54460)


def test_a_type_it_cannot_walk_is_refused() -> None:
    data = chdb.query("SELECT CAST(1, 'Variant(UInt8, String)') AS v", "Native").bytes()
    with pytest.raises(NativeFormatError, match=r"type Variant\(.*\) is not supported"):
        revised(data, 54460)


def test_types_split_at_their_top_level() -> None:
    assert split_type("Map(String, Array(Tuple(a UInt8, b String)))") == \
        ("Map", ["String", "Array(Tuple(a UInt8, b String))"])
    assert split_type("Enum8('a,b' = 1, 'c' = 2)") == ("Enum8", ["'a,b' = 1", "'c' = 2"])
