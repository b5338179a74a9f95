"""Reading an HTTP request body as a stream of chunks: Content-Length or chunked transfer
encoding, with the Content-Encodings ClickHouse's HTTP interface accepts."""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

READ_CHUNK = 1 << 16
MAX_CHUNK_LINE = 4096


class BadBodyError(ValueError):
    """The request body is malformed (bad chunk framing, unknown or corrupt encoding)."""


def raw_chunks(stream: BinaryIO, content_length: int | None, chunked: bool) -> Iterator[bytes]:
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


def _dechunk(stream: BinaryIO) -> Iterator[bytes]:
    while True:
        line = stream.readline(MAX_CHUNK_LINE)
        if not line.endswith(b"\n"):
            raise BadBodyError("chunked body: chunk size line missing or too long")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadBodyError(f"chunked body: {size_text[:20]!r} is not a hex chunk size") from None
        if size == 0:
            while stream.readline(MAX_CHUNK_LINE) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return
        remaining = size
        while remaining:
            piece = stream.read(min(READ_CHUNK, remaining))
            if not piece:
                raise BadBodyError("chunked body: connection closed inside a chunk")
            remaining -= len(piece)
            yield piece
        if stream.readline(MAX_CHUNK_LINE) not in (b"\r\n", b"\n"):
            raise BadBodyError("chunked body: chunk not followed by CRLF")


def _decompressor(encoding: str) -> Callable[[bytes], bytes] | None:
    enc = encoding.strip().lower()
    if enc in ("", "identity", "none"):
        return None
    if enc in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
    if enc == "deflate":
        return zlib.decompressobj().decompress
    if enc in ("xz", "lzma"):
        return lzma.LZMADecompressor().decompress
    if enc == "lz4":
        import lz4.frame

        return lz4.frame.LZ4FrameDecompressor().decompress
    if enc == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd  # type: ignore[no-redef]
        return zstd.ZstdDecompressor().decompress
    if enc in ("br", "brotli"):
        try:
            import brotli  # type: ignore[import-not-found]
        except ImportError:
            raise BadBodyError("Content-Encoding br needs the brotli package on the server; "
                          "send gzip, deflate, zstd, lz4 or xz instead") from None
        return brotli.Decompressor().process
    raise BadBodyError(f"unknown Content-Encoding {encoding!r}: use gzip, deflate, br, zstd, lz4 or xz")


def decoded_chunks(chunks: Iterator[bytes], content_encoding: str) -> Iterator[bytes]:
    """The body with its Content-Encoding undone, chunk by chunk."""
    decompress = _decompressor(content_encoding)
    if decompress is None:
        yield from chunks
        return
    for chunk in chunks:
        try:
            out = decompress(chunk)
        except (zlib.error, lzma.LZMAError, RuntimeError, OSError, ValueError) as exc:
            raise BadBodyError(f"request body is not valid {content_encoding}: {exc}") from None
        if out:
            yield out


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
                raise BadBodyError(f"query text longer than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)
