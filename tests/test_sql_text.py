"""The SQL lexer splits scripts and finds an INSERT's inline rows exactly where ClickHouse does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoppulse.sql_text import NeedMoreTextError, output_format, split_insert, split_statements

# Statement fragments that contain the characters a naive splitter trips on.
fragment = st.one_of(
    st.sampled_from(["SELECT 1", "CREATE TABLE t (a String DEFAULT ';')", "SELECT '--not a comment'",
                     "SELECT `we;ird`", "SELECT \"a;b\"", "SELECT 'it''s'", "SELECT 'esc\\';'", "SELECT (1;2)"]),
    st.text(alphabet=st.characters(blacklist_characters="'\\"), max_size=12).map(lambda s: f"SELECT '{s}'"),
)


@given(st.lists(fragment, min_size=1, max_size=6), st.sampled_from([";", ";\n", " ; -- c\n", ";/* ; */"]))
def test_statements_split_at_top_level_semicolons_only(statements: list[str], separator: str) -> None:
    script = separator.join(statements) + ";"
    assert split_statements(script) == statements


def test_comments_and_empty_statements_are_dropped() -> None:
    assert split_statements("-- only a comment;\n;;/* x */ SELECT 1 ; ;") == ["SELECT 1"]


@given(st.binary(max_size=200), st.sampled_from(["Native", "RowBinary", "CSV", "JSONEachRow"]),
       st.sampled_from(["\n", " \n", "\t\r\n", "\r\n"]))
def test_insert_rows_start_right_after_the_line_break_that_ends_the_head(data: bytes, fmt: str, gap: str) -> None:
    head = "INSERT INTO db.t (`a`, b) SETTINGS async_insert = 0"
    text = f"{head} FORMAT {fmt}{gap}".encode() + data
    split = split_insert(text.decode("latin-1"))
    assert split is not None
    assert (split.head, split.format) == (head, fmt)
    assert text[split.data_offset:] == data, "binary rows are never trimmed, whatever their first byte"


def test_without_a_line_break_spaces_before_the_rows_are_skipped() -> None:
    text = "INSERT INTO t FORMAT CSV   1,2\n"
    split = split_insert(text)
    assert split is not None and text[split.data_offset:] == "1,2\n"


@given(st.binary(min_size=1, max_size=60), st.integers(min_value=0, max_value=80))
def test_a_prefix_either_asks_for_more_or_agrees_with_the_whole(data: bytes, cut: int) -> None:
    text = (b"INSERT INTO t FORMAT RowBinary\n" + data).decode("latin-1")
    whole = split_insert(text)
    try:
        partial = split_insert(text[:cut], complete=False)
    except NeedMoreTextError:
        return
    assert partial == whole


@pytest.mark.parametrize("text", ["INSERT INTO t SELECT * FROM s", "INSERT INTO t WITH 1 AS x SELECT x",
                                  "SELECT 'INSERT INTO t FORMAT CSV'", "CREATE TABLE t (a UInt8) ENGINE = Memory"])
def test_statements_without_inline_rows_are_not_split(text: str) -> None:
    assert split_insert(text) is None


def test_values_rows_start_after_the_values_keyword() -> None:
    split = split_insert("INSERT INTO t (a) VALUES (1), ('x;y')")
    assert split is not None and split.format == "Values"
    assert "INSERT INTO t (a) VALUES (1), ('x;y')"[split.data_offset:] == " (1), ('x;y')"


def test_output_format_is_the_top_level_format_clause() -> None:
    assert output_format("SELECT 1 FORMAT JSONEachRow") == "JSONEachRow"
    assert output_format("SELECT 'FORMAT CSV' AS x") is None
    assert output_format("SELECT * FROM (SELECT 1 FORMAT CSV)") is None
