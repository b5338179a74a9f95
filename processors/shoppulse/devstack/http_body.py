"""Reading an HTTP request body as a stream of chunks: Content-Length or chunked transfer
encoding, with the Content-Encodings ClickHouse's HTTP interface accepts."""

from __future__ import annotations

import io
import lzma
import re
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol

READ_CHUNK = 1 << 16
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 100
_HEX_SIZE = re.compile(rb"^[0-9A-Fa-f]{1,15}$")
DECODED_CHUNK = 1 << 20  # at most this many decompressed bytes at a time


class BadBodyError(ValueError):
    """The request body is malformed (bad chunk framing, unknown or corrupt encoding)."""


ByteStream = BinaryIO | io.BufferedIOBase  # a file, or a request handler's rfile


def raw_chunks(stream: ByteStream, content_length: int | None, chunked: bool) -> Iterator[bytes]:
    """The body bytes as they arrive, without transfer framing."""
    if chunked:
        yield from _dechunk(stream)
        return
    remaining = content_length or 0
    while remaining > 0:
        piece = stream.read(min(READ_CHUNK, remaining))
        if not piece:
            raise BadBodyError(f"request body ended {remaining} bytes before its Content-Length")
        remaining -= len(piece)
        yield piece


def _dechunk(stream: ByteStream) -> Iterator[bytes]:
    while True:
        line = stream.readline(MAX_CHUNK_LINE)
        if not line.endswith(b"\n"):
            raise BadBodyError("chunked body: chunk size line missing or too long")
        size_text = line.split(b";", 1)[0].strip()
        if not _HEX_SIZE.match(size_text):  # int(…, 16) would take "-5", "0x5" and "1_0"
            raise BadBodyError(f"chunked body: {size_text[:20]!r} is not a hex chunk size")
        size = int(size_text, 16)
        if size == 0:
            for _ in range(MAX_TRAILERS + 1):
                if stream.readline(MAX_CHUNK_LINE) in (b"\r\n", b"\n", b""):
                    return
            raise BadBodyError(f"chunked body: more than {MAX_TRAILERS} trailer lines")
        remaining = size
        while remaining:
            piece = stream.read(min(READ_CHUNK, remaining))
            if not piece:
                raise BadBodyError("chunked body: connection closed inside a chunk")
            remaining -= len(piece)
            yield piece
        if stream.readline(MAX_CHUNK_LINE) not in (b"\r\n", b"\n"):
            raise BadBodyError("chunked body: chunk not followed by CRLF")


class _Decompressor(Protocol):
    """What lzma's, zstd's and lz4's stream decompressors share (zlib's through ``_Inflater``)."""

    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class _Inflater:
    """zlib's decompressor with the others' interface: bounded output, ``needs_input`` and ``eof``."""

    def __init__(self, wbits: int) -> None:
        self._zlib = zlib.decompressobj(wbits)
        self.needs_input = True

    @property
    def eof(self) -> bool:
        return self._zlib.eof

    @property
    def unused_data(self) -> bytes:
        return self._zlib.unused_data

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        out = self._zlib.decompress(self._zlib.unconsumed_tail + data, max(max_length, 0))
        self.needs_input = not self._zlib.unconsumed_tail and len(out) < max_length
        return out


def _decompressor_factory(encoding: str) -> Callable[[], _Decompressor] | None:
    enc = encoding.strip().lower()
    if enc in ("", "identity", "none"):
        return None
    if enc in ("gzip", "x-gzip"):
        return lambda: _Inflater(16 + zlib.MAX_WBITS)
    if enc == "deflate":
        return lambda: _Inflater(zlib.MAX_WBITS)
    if enc in ("xz", "lzma"):
        return lzma.LZMADecompressor
    if enc == "lz4":
        import lz4.frame

        return lz4.frame.LZ4FrameDecompressor
    if enc == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd  # type: ignore[no-redef]
        return zstd.ZstdDecompressor  # type: ignore[no-any-return]
    if enc in ("br", "brotli"):
        raise BadBodyError("Content-Encoding br is not supported by the local endpoint; "
                           "send gzip, deflate, zstd, lz4 or xz instead")
    raise BadBodyError(f"unknown Content-Encoding {encoding[:40]!r}: use gzip, deflate, zstd, lz4 or xz")


def decoded_chunks(chunks: Iterator[bytes], content_encoding: str) -> Iterator[bytes]:
    """The body with its Content-Encoding undone, in pieces of at most ``DECODED_CHUNK`` bytes
    whatever the compression ratio (a small bomb never becomes one large buffer). A stream that
    ends before its compressed end, or is corrupt, raises ``BadBodyError`` — after the pieces
    before it, so a consumer that commits only at the end commits nothing. Concatenated members
    (gzip) or frames (zstd, lz4, xz) are read one after the other."""
    factory = _decompressor_factory(content_encoding)
    if factory is None:
        yield from chunks
        return
    decompressor, started = factory(), False
    for chunk in chunks:
        pending = chunk
        while pending or not decompressor.needs_input:
            if decompressor.eof:  # the next member or frame, or garbage after the last one
                unused = decompressor.unused_data or b""  # lz4's is None
                if not (unused or pending):
                    break
                pending, decompressor = unused + pending, factory()
            started = True
            try:
                out = decompressor.decompress(pending, DECODED_CHUNK)
            except Exception as exc:  # each library raises its own kind (zlib.error, LZMAError, ZstdError…)
                raise BadBodyError(f"request body is not valid {content_encoding}: {exc}") from None
            pending = b""
            if out:
                yield out
    if started and not decompressor.eof:
        raise BadBodyError(f"request body ends before the end of its {content_encoding} stream (truncated): "
                           "nothing of it was used")


class BodyTooLongError(BadBodyError):
    """The body is longer than the reader asked for."""


class PeekableBody:
    """A body iterator that lets the caller read a prefix and then the rest, unchanged."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pushed: list[bytes] = []
        self.exhausted = False

    def read_more(self) -> bytes | None:
        if self._pushed:
            return self._pushed.pop()
        for chunk in self._chunks:
            return chunk
        self.exhausted = True
        return None

    def push_back(self, data: bytes) -> None:
        if data:
            self._pushed.append(data)

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self.read_more()) is not None:
            yield chunk

    def read_all(self, limit: int) -> bytes:
        parts, size = [], 0
        for chunk in self:
            size += len(chunk)
            if size > limit:
                raise BodyTooLongError(f"body longer than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)
