"""ClickHouse's Native format at the revision an HTTP client asks for (``client_protocol_version``).

A ClickHouse server writes Native for the client's protocol revision: from revision 1 each block
starts with its BlockInfo, and from DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION (54454) each column
header carries a custom-serialization flag. clickhouse-go (the driver of Grafana's ClickHouse plugin)
sends ``client_protocol_version`` over HTTP and decodes accordingly. The embedded engine writes
revision 0 only, so the endpoint re-frames its blocks: it walks each column's data by its type to
find where the next column begins (``skip``), and writes the headers the revision needs around
bytes it leaves untouched. A type it cannot walk is refused with ClickHouse's own error.
"""

from __future__ import annotations

import struct

from shoppulse.sql_text import UnterminatedError, first_word, tokens

MIN_REVISION_WITH_CUSTOM_SERIALIZATION = 54454
FIXED_WIDTH = {
    "UInt8": 1, "Int8": 1, "Bool": 1, "Enum8": 1, "UInt16": 2, "Int16": 2, "Enum16": 2, "Date": 2,
    "UInt32": 4, "Int32": 4, "Float32": 4, "Date32": 4, "DateTime": 4, "IPv4": 4, "Decimal32": 4,
    "UInt64": 8, "Int64": 8, "Float64": 8, "DateTime64": 8, "Decimal64": 8, "Time": 4, "Time64": 8,
    "UInt128": 16, "Int128": 16, "UUID": 16, "IPv6": 16, "Decimal128": 16,
    "UInt256": 32, "Int256": 32, "Decimal256": 32, "BFloat16": 2, "Nothing": 1,
}
_LC_INDEX_WIDTH = (1, 2, 4, 8)
_LC_HAS_ADDITIONAL_KEYS = 1 << 9


class NativeFormatError(ValueError):
    """The Native data holds a type the endpoint cannot re-frame, or is cut short."""


def split_type(text: str) -> tuple[str, list[str]]:
    """``Array(Nullable(String))`` -> ("Array", ["Nullable(String)"]); arguments split at top level."""
    text = text.strip()
    if "(" not in text:
        return text, []
    name, _, rest = text.partition("(")
    if not rest.endswith(")"):
        raise NativeFormatError(f"malformed type {text!r}")
    args: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    for char in rest[:-1]:
        if char == "'" and (not current or current[-1] != "\\"):
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and char == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    args.append("".join(current).strip())
    return name.strip(), args


class _Reader:
    def __init__(self, data: bytes, position: int = 0) -> None:
        self.data, self.position = data, position

    def take(self, size: int) -> bytes:
        end = self.position + size
        if end > len(self.data):
            raise NativeFormatError("block cut short")
        piece = self.data[self.position:end]
        self.position = end
        return piece

    def varint(self) -> int:
        shift = value = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise NativeFormatError("varint too long")

    def string(self) -> bytes:
        return self.take(self.varint())

    def uint64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])


def _width(name: str, args: list[str]) -> int | None:
    if name == "Decimal":
        precision = int(args[0])
        return 4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32
    if name == "FixedString":
        return int(args[0])
    return FIXED_WIDTH.get(name)


def skip(reader: _Reader, type_name: str, rows: int) -> None:
    """Move past a column of ``rows`` values of ``type_name`` in Native's layout: the serialization
    state prefixes of its nested types first (a LowCardinality's keys version, wherever it is nested),
    then the values."""
    _skip_prefix(reader, type_name)
    _skip_values(reader, type_name, rows)


def _skip_prefix(reader: _Reader, type_name: str) -> None:
    name, args = split_type(type_name)
    if name == "LowCardinality":
        reader.uint64()  # the keys' serialization version
    elif name in ("Array", "Nullable", "SimpleAggregateFunction"):
        _skip_prefix(reader, args[-1] if name == "SimpleAggregateFunction" else args[0])
    elif name in ("Map", "Tuple"):
        for inner in args:
            _skip_prefix(reader, inner.split(" ", 1)[-1] if _named(inner) else inner)


def _skip_values(reader: _Reader, type_name: str, rows: int) -> None:
    name, args = split_type(type_name)
    width = _width(name, args)
    if width is not None:
        reader.take(width * rows)
    elif name == "String":
        for _ in range(rows):
            reader.string()
    elif name == "Nullable":
        reader.take(rows)  # the null map
        _skip_values(reader, args[0], rows)
    elif name in ("Array", "Map"):
        offsets = [reader.uint64() for _ in range(rows)]
        count = offsets[-1] if offsets else 0
        for inner in ([args[0]] if name == "Array" else args):
            _skip_values(reader, inner, count)
    elif name == "Tuple":
        for inner in args:
            _skip_values(reader, inner.split(" ", 1)[-1] if _named(inner) else inner, rows)
    elif name == "LowCardinality":
        _skip_low_cardinality(reader, args[0], rows)
    elif name in ("SimpleAggregateFunction",):
        _skip_values(reader, args[-1], rows)
    else:
        raise NativeFormatError(f"type {type_name} is not supported by the local endpoint's Native output")


def _named(element: str) -> bool:
    """A named tuple element (``name Type``) rather than a bare type."""
    head = element.split("(", 1)[0].strip()
    return " " in head


def _skip_low_cardinality(reader: _Reader, inner: str, rows: int) -> None:
    if rows == 0:  # (its keys' version came with the column's state prefixes)
        return
    index_type = reader.uint64()
    wrapper, wrapped = split_type(inner)
    dictionary = wrapped[0] if wrapper == "Nullable" else inner  # the dictionary holds no NULL
    if index_type & _LC_HAS_ADDITIONAL_KEYS:
        _skip_values(reader, dictionary, reader.uint64())
    indexes = reader.uint64()
    reader.take(_LC_INDEX_WIDTH[index_type & 0xFF] * indexes)


def describable(statement: str) -> str | None:
    """A SELECT without its top-level FORMAT clause and what follows its end (``;``, comments), to
    DESCRIBE as a subquery; None for any other statement."""
    try:
        if first_word(statement) not in ("SELECT", "WITH"):
            return None
        end = len(statement)
        last = 0
        for tok in tokens(statement):
            if tok.depth == 0 and (tok.kind == "semicolon"
                                   or (tok.kind == "word" and statement[tok.start:tok.end].upper() == "FORMAT")):
                end = tok.start
                break
            last = tok.end
    except UnterminatedError:
        return None
    return statement[:min(end, last)]


def header_block(columns: list[tuple[str, str]]) -> bytes:
    """A Native block of no rows naming the result's columns, as a server sends for an empty result
    (clients take the column names and types from it)."""
    out = bytearray(_varint(len(columns)) + _varint(0))
    for name, type_name in columns:
        for text in (name.encode(), type_name.encode()):
            out += _varint(len(text)) + text
    return bytes(out)


def _block_info() -> bytes:
    # field 1: is_overflows (false), field 2: bucket_num (-1), end of fields
    return b"\x01\x00\x02" + struct.pack("<i", -1) + b"\x00"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class NativeReviser:
    """Re-frames revision-0 Native blocks, fed in any pieces, for a client's revision."""

    def __init__(self, revision: int) -> None:
        self.revision = revision
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        """The complete blocks so far, re-framed; the tail of an unfinished block waits for more."""
        self._pending += data
        out = bytearray()
        while self._pending:
            try:
                block, used = self._block(self._pending)
            except NativeFormatError as exc:
                if str(exc) == "block cut short":
                    break
                raise
            out += block
            self._pending = self._pending[used:]
        return bytes(out)

    def finish(self) -> None:
        if self._pending:
            raise NativeFormatError("the result ended inside a block")

    def _block(self, data: bytes) -> tuple[bytes, int]:
        reader = _Reader(data)
        columns, rows = reader.varint(), reader.varint()
        out = bytearray(_block_info() if self.revision > 0 else b"")
        out += _varint(columns) + _varint(rows)
        for _ in range(columns):
            start = reader.position
            reader.string()
            type_name = reader.string().decode()
            out += data[start:reader.position]
            if self.revision >= MIN_REVISION_WITH_CUSTOM_SERIALIZATION:
                out += b"\x00"  # no custom serialization
            start = reader.position
            if rows:
                skip(reader, type_name, rows)
            out += data[start:reader.position]
        return bytes(out), reader.position
