"""Request bodies: Content-Length or chunked framing, and every Content-Encoding ClickHouse accepts."""

from __future__ import annotations

import contextlib
import gzip
import io
import lzma
import zlib

import lz4.frame
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoppulse.devstack.http_body import DECODED_CHUNK, BadBodyError, PeekableBody, decoded_chunks, raw_chunks


def chunked(data: bytes, sizes: list[int]) -> bytes:
    out, pos = b"", 0
    for size in [*sizes, len(data)]:
        piece = data[pos:pos + max(size, 1)]
        if not piece:
            break
        out += f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
        pos += len(piece)
    return out + b"0\r\nX-Trailer: y\r\n\r\n"


@given(st.binary(max_size=5000), st.lists(st.integers(min_value=1, max_value=700), max_size=20))
def test_chunked_bodies_decode_to_the_original_bytes(data: bytes, sizes: list[int]) -> None:
    stream = io.BytesIO(chunked(data, sizes) + b"NEXT REQUEST")
    assert b"".join(raw_chunks(stream, None, chunked=True)) == data
    assert stream.read() == b"NEXT REQUEST", "the reader stops exactly at the end of the body"


@given(st.binary(max_size=3000))
def test_content_length_bodies_are_read_exactly(data: bytes) -> None:
    stream = io.BytesIO(data + b"tail")
    assert b"".join(raw_chunks(stream, len(data), chunked=False)) == data


@pytest.mark.parametrize(("encoding", "compress"), [
    ("gzip", gzip.compress), ("deflate", zlib.compress), ("xz", lzma.compress), ("lz4", lz4.frame.compress),
])
def test_every_content_encoding_is_undone(encoding: str, compress) -> None:
    data = b"1,one\n2,two\n" * 1000
    packed = compress(data)
    pieces = [packed[i:i + 100] for i in range(0, len(packed), 100)]
    assert b"".join(decoded_chunks(iter(pieces), encoding)) == data


def test_zstd_content_encoding_is_undone() -> None:
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        from backports import zstd  # type: ignore[no-redef]
    assert b"".join(decoded_chunks(iter([zstd.compress(b"abc" * 100)]), "zstd")) == b"abc" * 100


@pytest.mark.parametrize(("body", "message"), [
    (b"zz\r\nabc\r\n0\r\n\r\n", "not a hex chunk size"),
    (b"5\r\nab", "connection closed inside a chunk"),
    (b"3\r\nabcXX0\r\n\r\n", "chunk not followed by CRLF"),
])
def test_broken_chunk_framing_is_a_clear_error(body: bytes, message: str) -> None:
    with pytest.raises(BadBodyError, match=message):
        b"".join(raw_chunks(io.BytesIO(body), None, chunked=True))


def test_short_body_unknown_and_corrupt_encodings_are_clear_errors() -> None:
    with pytest.raises(BadBodyError, match="ended 7 bytes before its Content-Length"):
        b"".join(raw_chunks(io.BytesIO(b"abc"), 10, chunked=False))
    with pytest.raises(BadBodyError, match="unknown Content-Encoding 'rot13'"):
        b"".join(decoded_chunks(iter([b"x"]), "rot13"))
    with pytest.raises(BadBodyError, match="not valid gzip"):
        b"".join(decoded_chunks(iter([b"definitely not gzip"]), "gzip"))


def test_a_peeked_prefix_is_given_back_unchanged() -> None:
    body = PeekableBody(iter([b"ab", b"cd", b"ef"]))
    first = body.read_more()
    body.push_back(first or b"")
    assert b"".join(body) == b"abcdef"
    assert body.exhausted


@given(st.binary(max_size=2000), st.sampled_from(["gzip", "deflate", "xz", "lz4", "zstd"]))
def test_any_bytes_under_any_encoding_decode_or_raise_a_clear_error(data: bytes, encoding: str) -> None:
    with contextlib.suppress(BadBodyError):
        b"".join(decoded_chunks(iter([data[:7], data[7:]]), encoding))


@given(st.binary(min_size=1, max_size=3000), st.sampled_from(["gzip", "deflate", "xz", "lz4"]),
       st.floats(min_value=0.05, max_value=0.95))
def test_a_truncated_stream_is_refused_after_what_it_decoded(data: bytes, encoding: str, cut: float) -> None:
    compress = {"gzip": gzip.compress, "deflate": zlib.compress, "xz": lzma.compress,
                "lz4": lz4.frame.compress}[encoding]
    packed = compress(data)
    with pytest.raises(BadBodyError, match=r"truncated|not valid"):
        b"".join(decoded_chunks(iter([packed[: max(1, int(len(packed) * cut))]]), encoding))


def test_a_bomb_decodes_in_bounded_pieces() -> None:
    bomb = zlib.compress(b"\0" * (64 << 20))
    assert max(len(piece) for piece in decoded_chunks(iter([bomb]), "deflate")) <= DECODED_CHUNK


def test_negative_or_odd_chunk_sizes_are_refused() -> None:
    for size in (b"-5", b"0x5", b"1_0", b"+5", b"ffffffffffffffffffff"):
        with pytest.raises(BadBodyError, match="not a hex chunk size"):
            b"".join(raw_chunks(io.BytesIO(size + b"\r\nabcde\r\n0\r\n\r\n"), None, chunked=True))
