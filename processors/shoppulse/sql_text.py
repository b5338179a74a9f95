"""A small lexer for ClickHouse SQL text: split statements, find an INSERT's inline data, find FORMAT.

It knows just enough of the grammar to never split inside a string, a quoted identifier,
a comment or parentheses. Offsets are character offsets; callers that hold bytes decode
them as latin-1 so that offsets equal byte offsets."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPACE = " \t\r\n\f\v"


@dataclass(frozen=True)
class Token:
    kind: str  # word | string | quoted | open | close | semicolon | other
    start: int
    end: int
    depth: int  # parenthesis depth at the token


class UnterminatedError(ValueError):
    """The text ends inside a string, quoted identifier or block comment."""


def tokens(text: str) -> Iterator[Token]:
    """Significant tokens of ``text`` (whitespace and comments skipped)."""
    i, n, depth = 0, len(text), 0
    while i < n:
        c = text[i]
        if c in _SPACE:
            i += 1
        elif text.startswith("--", i) or text.startswith("#!", i) or text.startswith("# ", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise UnterminatedError(f"block comment opened at offset {i} is never closed")
            i = j + 2
        elif c in "'\"`":
            j = _end_of_quoted(text, i)
            yield Token("string" if c == "'" else "quoted", i, j, depth)
            i = j
        elif c in {"(", "["}:
            yield Token("open", i, i + 1, depth)
            depth += 1
            i += 1
        elif c in {")", "]"}:
            depth = max(depth - 1, 0)
            yield Token("close", i, i + 1, depth)
            i += 1
        elif c == ";":
            yield Token("semicolon", i, i + 1, depth)
            i += 1
        else:
            m = _WORD.match(text, i)
            if m:
                yield Token("word", i, m.end(), depth)
                i = m.end()
            else:
                yield Token("other", i, i + 1, depth)
                i += 1


def _end_of_quoted(text: str, start: int) -> int:
    quote, i, n = text[start], start + 1, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
        elif c == quote:
            if i + 1 < n and text[i + 1] == quote:  # doubled quote escapes itself
                i += 2
            else:
                return i + 1
        else:
            i += 1
    raise UnterminatedError(f"quote {quote} opened at offset {start} is never closed")


def split_statements(text: str) -> list[str]:
    """The statements of a SQL script, split at top-level semicolons, without empty ones."""
    statements, start = [], 0
    has_content = False
    for tok in tokens(text):
        if tok.kind == "semicolon" and tok.depth == 0:
            if has_content:
                statements.append(text[start:tok.start].strip())
            start, has_content = tok.end, False
        else:
            if not has_content:
                start = tok.start
            has_content = True
    if has_content:
        statements.append(text[start:].strip())
    return statements


def first_word(text: str) -> str:
    """The statement's leading keyword, upper-cased ('' when there is none)."""
    for tok in tokens(text):
        return text[tok.start:tok.end].upper() if tok.kind == "word" else ""
    return ""


@dataclass(frozen=True)
class InsertSplit:
    """An INSERT whose rows follow the statement inline: ``head`` is the statement up to
    (not including) ``FORMAT name`` or ``VALUES``; the rows begin at ``data_offset``."""

    head: str
    format: str
    data_offset: int


def split_insert(text: str, complete: bool = True) -> InsertSplit | None:
    """Where an INSERT's inline data begins, following ClickHouse's rule: after the format
    name, skip spaces and tabs, then at most one line break.

    Returns None when ``text`` is not an INSERT with inline data (INSERT … SELECT, other
    statements). When ``complete`` is false, ``text`` may be a prefix of a longer body, and
    a ValueError subclass ``NeedMoreTextError`` is raised when the prefix is too short to decide."""
    toks = _top_level_tokens(text, complete)
    if not complete and (not toks or toks[0].end >= len(text)):
        raise NeedMoreTextError("statement keyword not complete yet")
    if not toks or _upper(text, toks[0]) != "INSERT":
        return None
    for index, tok in enumerate(toks):
        word = _upper(text, tok) if tok.kind == "word" and tok.depth == 0 else ""
        if word in ("SELECT", "WITH") and index > 1:
            return None
        if word == "VALUES":
            return InsertSplit(text[:tok.start].rstrip(), "Values", tok.end)
        if word == "FORMAT":
            if index + 1 >= len(toks):
                raise NeedMoreTextError("INSERT ... FORMAT without a format name")
            name_tok = toks[index + 1]
            if not complete and name_tok.end >= len(text):
                raise NeedMoreTextError("format name may continue")
            return InsertSplit(text[:tok.start].rstrip(), text[name_tok.start:name_tok.end],
                               _skip_to_data(text, name_tok.end))
    if complete:
        return None
    raise NeedMoreTextError("INSERT head not complete yet")


class NeedMoreTextError(ValueError):
    """The text seen so far is too short to find where the statement ends."""


def _top_level_tokens(text: str, complete: bool) -> list[Token]:
    out: list[Token] = []
    try:
        for tok in tokens(text):
            out.append(tok)
            if tok.kind == "word" and tok.depth == 0 and _upper(text, tok) in ("FORMAT", "VALUES"):
                # Whatever follows may be binary rows: lex only the format name after it.
                m = _WORD.match(text, len(text) - len(text[tok.end:].lstrip(_SPACE)))
                if m:
                    out.append(Token("word", m.start(), m.end(), 0))
                break
    except UnterminatedError:
        if complete:
            raise
        raise NeedMoreTextError("statement head not complete yet") from None
    return out


def _skip_to_data(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in " \t\f":
        pos += 1
    if pos < n and text[pos] == "\r":
        pos += 1
    if pos < n and text[pos] == "\n":
        pos += 1
    return pos


def output_format(text: str) -> str | None:
    """The ``FORMAT name`` a (non-INSERT) statement asks for at its top level, if any."""
    found = None
    words = [t for t in tokens(text) if t.depth == 0]
    for tok, nxt in itertools.pairwise(words):
        if tok.kind == "word" and nxt.kind == "word" and _upper(text, tok) == "FORMAT":
            found = text[nxt.start:nxt.end]
    return found


def _upper(text: str, tok: Token) -> str:
    return text[tok.start:tok.end].upper()


def into_outfile(text: str) -> bool:
    """Whether the statement writes its result to a file (``INTO OUTFILE``), which a ClickHouse
    server refuses over HTTP."""
    words = [t for t in tokens(text) if t.kind != "other"]
    return any(tok.kind == "word" and nxt.kind == "word" and _upper(text, tok) == "INTO"
               and _upper(text, nxt) == "OUTFILE" for tok, nxt in itertools.pairwise(words))



class RawByteError(ValueError):
    """A byte that is not UTF-8 outside a string literal or comment (``offset`` is its place)."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"byte {offset} is not UTF-8 and is outside a string literal")
        self.offset = offset


def is_raw_byte(ch: str) -> bool:
    """A byte that was not UTF-8, as ``surrogateescape`` decoding keeps it."""
    return "\udc80" <= ch <= "\udcff"


def escape_raw_bytes(text: str) -> str:
    """Query text decoded with ``surrogateescape``, with each byte that is not UTF-8 written as ClickHouse's
    ``\\xHH`` escape inside string literals (so the literal holds exactly those bytes, as a ClickHouse
    server reads the raw query) and dropped from comments (which the server ignores). Such a byte
    anywhere else is an error, as the server's lexer has no token for it."""
    if not any(is_raw_byte(ch) for ch in text):
        return text
    kinds = [""] * len(text)  # "" is whitespace or a comment: what no token covers
    for token in tokens(text):
        kinds[token.start:token.end] = [token.kind] * (token.end - token.start)
    out = []
    for offset, (ch, kind) in enumerate(zip(text, kinds, strict=True)):
        if not is_raw_byte(ch):
            out.append(ch)
        elif kind == "string":
            out.append(f"\\x{ord(ch) - 0xDC00:02X}")
        elif kind:
            raise RawByteError(offset)
    return "".join(out)
