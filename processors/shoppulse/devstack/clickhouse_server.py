"""A ClickHouse-compatible HTTP endpoint over the real ClickHouse engine embedded by chdb.

One process owns the database folder (an exclusive lock on it); every other component is
a client that talks to this endpoint with clickhouse-connect over HTTP, exactly as it talks
to a ClickHouse server in production. The endpoint follows ClickHouse's HTTP interface:

* the query in the ``query`` parameter and/or the POST body (``query`` + newline + body);
* INSERT rows in any input format after ``FORMAT name`` (or ``VALUES``), streamed into
  the engine as they arrive, with ``Content-Length`` or chunked bodies and the usual
  ``Content-Encoding`` (gzip, deflate, zstd, lz4, xz, br);
* output in the statement's ``FORMAT`` or ``default_format`` (TabSeparated otherwise),
  streamed with chunked transfer unless ``wait_end_of_query=1``;
* every other URL parameter is a setting; ``param_<name>`` binds ``{name:Type}``;
  ``database``, ``query_id``, ``session_id``/``session_timeout``; GET implies ``readonly=2``;
* errors as ClickHouse sends them: the exception text in the body, the code in
  ``X-ClickHouse-Exception-Code`` and an HTTP status derived from it;
* ``/ping`` and ``/replicas_status`` answer ``Ok.``; ``/metrics`` is for Prometheus.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy as email_policy
from email.message import Message
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import chdb
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from shoppulse.devstack.clickhouse_engine import (
    MAX_SESSION_TIMEOUT_S,
    SESSION_TIMEOUT_S,
    Engine,
    Sessions,
    _identifier,
    _literal,
)
from shoppulse.devstack.clickhouse_errors import (
    AUTHENTICATION_FAILED,
    CANNOT_PARSE_INPUT,
    CANNOT_PARSE_TEXT,
    INTO_OUTFILE_NOT_ALLOWED,
    INVALID_SESSION_TIMEOUT,
    NOT_IMPLEMENTED,
    READONLY,
    SOCKET_TIMEOUT,
    STD_EXCEPTION,
    STREAMING_NOT_SUPPORTED,
    SYNTAX_ERROR,
    TOO_MANY_ROWS_OR_BYTES,
    UNKNOWN_ROLE,
    UNKNOWN_SETTING,
    UNSUPPORTED_METHOD,
    ClickHouseError,
)
from shoppulse.devstack.http_body import BadBodyError, BodyTooLongError, PeekableBody, decoded_chunks, raw_chunks
from shoppulse.devstack.http_connection import (
    HEADERS_TIMEOUT_S,
    RECEIVE_TIMEOUT_S,
    SEND_TIMEOUT_S,
    client_has_gone,
    deadline_reader,
)
from shoppulse.devstack.native_format import NativeFormatError, NativeReviser, describable, header_block
from shoppulse.devstack.process import StartupError
from shoppulse.devstack.reader_access import MAX_RESULT_BYTES, check_reader_statement, reader_settings
from shoppulse.sql_text import (
    NeedMoreTextError,
    RawByteError,
    UnterminatedError,
    escape_raw_bytes,
    into_outfile,
    is_raw_byte,
    output_format,
    split_insert,
)

log = logging.getLogger(__name__)

MAX_QUERY_SIZE = 256 * 1024  # ClickHouse's default max_query_size, bytes: the longest query text
BUFFER_BEFORE_STREAMING = 1 << 20  # results up to this size get a Content-Length
LISTEN_BACKLOG = 4096  # ClickHouse's listen_backlog (the kernel may cap it at somaxconn)
MAX_CONNECTIONS = 1024  # connections served at once, a thread each; more are closed at once
MAX_URL_PARAMS = 1000
MAX_FORM_SIZE = 4 * MAX_QUERY_SIZE  # a form body: the query and its parameters
DEFAULT_FORMAT = "TabSeparated"

# URL parameters that are part of the HTTP protocol, not settings.
_PROTOCOL_PARAMS = frozenset({
    "query", "database", "default_format", "user", "password", "quota_key", "query_id",
    "session_id", "session_timeout", "session_check", "compress", "decompress", "buffer_size",
    "wait_end_of_query", "role", "client_protocol_version", "stacktrace", "add_http_cors_header",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms", "enable_http_compression",
    "http_zlib_compression_level", "http_native_compression_disable_checksumming_on_decompress",
    "output_format_parallel_formatting",
})
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_CONTENT_TYPES = {
    "json": "application/json; charset=UTF-8",
    "jsoncompact": "application/json; charset=UTF-8",
    "jsoneachrow": "application/x-ndjson; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8; header=absent",
    "csvwithnames": "text/csv; charset=UTF-8; header=present",
    "tabseparated": "text/tab-separated-values; charset=UTF-8",
    "tsv": "text/tab-separated-values; charset=UTF-8",
    "tabseparatedwithnames": "text/tab-separated-values; charset=UTF-8",
    "tabseparatedwithnamesandtypes": "text/tab-separated-values; charset=UTF-8",
    "pretty": "text/plain; charset=UTF-8",
}


class EndpointMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("shoppulse_clickhouse_http_requests", "HTTP requests by kind and outcome",
                                ["kind", "outcome"], registry=self.registry)
        self.seconds = Histogram("shoppulse_clickhouse_http_request_seconds", "Request duration",
                                 ["kind"], registry=self.registry,
                                 buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.inserted_rows = Counter("shoppulse_clickhouse_inserted_rows", "Rows inserted over HTTP",
                                     registry=self.registry)
        self.errors = Counter("shoppulse_clickhouse_errors", "ClickHouse errors returned, by code",
                              ["code"], registry=self.registry)
        self.refused_connections = Counter("shoppulse_clickhouse_refused_connections",
                                           "Client connections closed at once: MAX_CONNECTIONS were being served",
                                           registry=self.registry)
        self.connections = Counter("shoppulse_clickhouse_connections_opened",
                                   "Engine connections opened (idle ones serve later requests)", registry=self.registry)


_TAG_ALPHABET = string.ascii_lowercase + string.digits


@dataclass
class _Request:
    params: dict[str, str]
    settings: dict[str, str]
    query_params: dict[str, str]
    query_id: str
    default_format: str
    database: str | None
    reader: bool = False
    # Sent on every response as X-ClickHouse-Exception-Tag (ClickHouse 25.11+): an error after a
    # result started streaming is framed with it, so a client tells it from result bytes.
    exception_tag: str = field(default_factory=lambda: "".join(secrets.choice(_TAG_ALPHABET) for _ in range(16)))



def exception_block(tag: str, message: bytes) -> bytes:
    """An error in the middle of a streamed result, framed as ClickHouse 25.11+ frames it (its
    WriteBufferFromHTTPServerResponse; clickhouse-go and clickhouse-connect parse it): the marker, the
    response's tag, the message, its length and the tag again, the marker."""
    text = message.rstrip(b"\n")
    return (b"\r\n__exception__\r\n" + tag.encode() + b"\r\n" + text + b"\n"
            + f"{len(text)} {tag}".encode() + b"\r\n__exception__\r\n")


class ClientGoneError(Exception):
    """The client closed its connection before its result was complete."""


class ClickHouseHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], engine: Engine, user: str, password: str,
                 readers: dict[str, str] | None = None) -> None:
        """``readers`` (user -> password) may only read: the engine has no access storage of its own,
        so the endpoint decides what they may run (``reader_access``; the grafana_reader role's job
        on a real server)."""
        super().__init__(address, ClickHouseHandler)
        self.engine = engine
        self.sessions = Sessions(engine)
        self.metrics = EndpointMetrics()
        engine.on_connect = self.metrics.connections.inc
        self.user = user
        self.password = password
        self.readers = {name: secret for name, secret in (readers or {}).items() if name != user}
        self._connection_slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per connection, up to ``MAX_CONNECTIONS``; a connection beyond that is closed at once
        (as ClickHouse's max_connections does), so a flood cannot take every thread and memory."""
        if not self._connection_slots.acquire(blocking=False):
            self.metrics.refused_connections.inc()
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connection_slots.release()


class ClickHouseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "shoppulse-clickhouse"
    # Headers and body go out in separate writes; with Nagle's algorithm on, a keep-alive client's
    # delayed ACK then holds every response back ~40 ms.
    disable_nagle_algorithm = True
    server: ClickHouseHTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(SEND_TIMEOUT_S)
        self.rfile, self._reader = deadline_reader(self.connection)

    def handle_one_request(self) -> None:
        # The request line and headers, and a keep-alive connection's wait for them, have one deadline.
        self._reader.deadline = time.monotonic() + HEADERS_TIMEOUT_S
        super().handle_one_request()

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self._reader.deadline = None  # the body's reads each wait up to RECEIVE_TIMEOUT_S
        return parsed

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a malformed request line or header, one too long),
        answered like every other error: an HTTP/1.1 status line and ClickHouse's error format."""
        if self.request_version == "HTTP/0.9":  # else the answer would have no status line
            self.request_version = "HTTP/1.1"
        self.close_connection = True
        with contextlib.suppress(OSError):
            self._send_error(ClickHouseError(CANNOT_PARSE_INPUT, f"Malformed HTTP request: {(message or '')[:200]} "
                                                                 "(CANNOT_PARSE_INPUT_ASSERTION_FAILED)"), "", code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http " + format % args)

    def do_GET(self) -> None:
        self._handle(readonly_by_method=True)

    def do_POST(self) -> None:
        self._handle(readonly_by_method=False)

    # -- request handling ---------------------------------------------------------------

    def _handle(self, readonly_by_method: bool) -> None:
        url = urlsplit(self.path)
        started = time.perf_counter()
        if url.path in ("/ping", "/replicas_status") or (url.path == "/" and not url.query and readonly_by_method):
            self._skip_body()
            self._send(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
            return
        if url.path == "/metrics":
            self._skip_body()
            self._send(200, generate_latest(self.server.metrics.registry), {"Content-Type": CONTENT_TYPE_LATEST})
            return
        if url.path not in ("/", "/query"):
            self._skip_body()
            self._send_error(ClickHouseError(UNSUPPORTED_METHOD, f"There is no handle {url.path[:100]}"), "", 404)
            return
        kind = "query"
        query_id = ""
        try:
            content_length, chunked = self._body_framing()
            body = PeekableBody(decoded_chunks(raw_chunks(self.rfile, content_length, chunked),
                                               self.headers.get("Content-Encoding", "")))
            query_string = url.query
            form = None if readonly_by_method else form_fields(self.headers.get("Content-Type", ""), body)
            if form is not None:  # the query, its parameters and settings as form fields (HTMLForm)
                query_string = f"{form}&{url.query}" if url.query else form  # the URL's win, as they come first
                body = PeekableBody(iter(()))
            request = self._parse_request(query_string)
            query_id = request.query_id
            self._authorize(request, self._authenticate(request.params), readonly_by_method)
            if request.params.get("decompress") in ("1", "true"):
                raise ClickHouseError(NOT_IMPLEMENTED, "decompress=1 (ClickHouse's native block compression) is "
                                      "not supported by the local endpoint: use Content-Encoding instead")
            kind = self._execute(request, body, readonly_by_method)
            self.server.metrics.requests.labels(kind, "ok").inc()
        except ClickHouseError as exc:
            self._fail(kind, exc, query_id)
        except BadBodyError as exc:
            self._fail(kind, ClickHouseError(CANNOT_PARSE_INPUT, f"{exc} (CANNOT_PARSE_INPUT_ASSERTION_FAILED)"),
                       query_id)
        except (NeedMoreTextError, UnterminatedError) as exc:
            self._fail(kind, ClickHouseError(SYNTAX_ERROR, f"Syntax error: {exc} (SYNTAX_ERROR)"), query_id)
        except (RuntimeError, chdb.ChdbError) as exc:
            self._fail(kind, ClickHouseError.from_engine(exc), query_id)
        except TimeoutError:
            self._fail(kind, ClickHouseError(SOCKET_TIMEOUT, f"The request body did not arrive within "
                                                             f"{RECEIVE_TIMEOUT_S:g} s (SOCKET_TIMEOUT)"), query_id)
        except (ClientGoneError, ConnectionError):
            self.server.metrics.requests.labels(kind, "client_gone").inc()
            self.close_connection = True
        except Exception as exc:  # a bug of ours must still give the client an answer, without our internals
            log.exception("endpoint error", extra={"query_id": query_id, "error_type": type(exc).__name__})
            self._fail(kind, ClickHouseError(STD_EXCEPTION, "Internal error of the local endpoint; its log has the "
                                                            "details (STD_EXCEPTION)"), query_id)
        finally:
            self.server.metrics.seconds.labels(kind).observe(time.perf_counter() - started)

    def _fail(self, kind: str, exc: ClickHouseError, query_id: str) -> None:
        self.server.metrics.requests.labels(kind, "error").inc()
        self.server.metrics.errors.labels(str(exc.code)).inc()
        # The code only: the message may quote the statement and its literals.
        log.info("query failed", extra={"query_id": query_id, "code": exc.code, "error": exc.name})
        # The rest of the body may still be on the wire: the connection cannot be reused.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self._send_error(exc, query_id)

    def _parse_request(self, query_string: str) -> _Request:
        params = dict(parse_qsl(query_string, keep_blank_values=True, max_num_fields=MAX_URL_PARAMS,
                                errors="surrogateescape"))  # the query keeps its raw bytes (see _escaped)
        for name, value in params.items():
            if name != "query" and any(is_raw_byte(ch) for ch in name + value):
                raise ClickHouseError(CANNOT_PARSE_TEXT, f"The parameter {name[:100]!r} is not valid UTF-8 "
                                                         "(CANNOT_PARSE_TEXT)")
        if params.get("role"):  # the embedded engine has no user directories, so no role exists
            raise ClickHouseError(UNKNOWN_ROLE, f"There is no role `{params['role'][:100]}` in user directories "
                                                "(UNKNOWN_ROLE)")
        settings: dict[str, str] = {}
        query_params: dict[str, str] = {}
        for name, value in params.items():
            if name.startswith("param_"):
                query_params[name[len("param_"):]] = value
            elif name not in _PROTOCOL_PARAMS:
                if not _SETTING_NAME.match(name):
                    raise ClickHouseError(UNKNOWN_SETTING, f"Unknown setting '{name[:100]}' (UNKNOWN_SETTING)")
                settings[name] = value
        return _Request(
            params=params, settings=settings, query_params=query_params,
            query_id=params.get("query_id") or str(uuid.uuid4()),
            default_format=params.get("default_format") or DEFAULT_FORMAT,
            database=params.get("database") or None,
        )

    def _authorize(self, request: _Request, user: str, readonly_by_method: bool) -> None:
        """Settings the user may run the request with: a reader's are decided by ``reader_settings``."""
        if user in self.server.readers:
            request.settings = reader_settings(request.settings, self.server.engine.setting_value)
            request.reader = True
            return
        if readonly_by_method and request.settings.get("readonly", "0") in ("0", ""):
            request.settings["readonly"] = "2"  # as ClickHouse does: GET requests cannot change data
        if request.settings.get("readonly") == "1" and len(request.settings) > 1:
            raise ClickHouseError(READONLY, "Cannot modify settings in readonly mode (READONLY)")

    def _authenticate(self, params: dict[str, str]) -> str:
        """The authenticated user name. Credentials come from one source — the Authorization header,
        the X-ClickHouse-User/Key headers or the user/password parameters — as on a ClickHouse server."""
        headers = self.headers
        sources = [name for name, given in (
            ("the Authorization header", "Authorization" in headers),
            ("X-ClickHouse-User/Key headers", "X-ClickHouse-User" in headers or "X-ClickHouse-Key" in headers),
            ("user/password parameters", "user" in params or "password" in params)) if given]
        if len(sources) > 1:
            raise ClickHouseError(AUTHENTICATION_FAILED,
                                  f"Invalid authentication: it is not allowed to use {' and '.join(sources)} "
                                  "simultaneously (AUTHENTICATION_FAILED)")
        user, password = params.get("user"), params.get("password")
        auth = self.headers.get("Authorization", "")
        if auth:
            if not auth.lower().startswith("basic "):
                raise ClickHouseError(AUTHENTICATION_FAILED, "Only Basic authorization is supported "
                                                             "(AUTHENTICATION_FAILED)")
            try:
                user, _, password = base64.b64decode(auth[6:], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise ClickHouseError(AUTHENTICATION_FAILED, "Malformed Basic authorization header "
                                                             "(AUTHENTICATION_FAILED)") from None
        user = self.headers.get("X-ClickHouse-User", user) or "default"
        password = self.headers.get("X-ClickHouse-Key", password) or ""
        known = (user == self.server.user and hmac.compare_digest(password, self.server.password)) or (
            user in self.server.readers and hmac.compare_digest(password, self.server.readers[user]))
        if not known:
            raise ClickHouseError(
                AUTHENTICATION_FAILED,
                f"{user[:100]}: Authentication failed: password is incorrect, or there is no user with such name "
                "(AUTHENTICATION_FAILED)")
        return user

    def _body_framing(self) -> tuple[int | None, bool]:
        """The body's Content-Length and whether it is chunked; ambiguous framing (two lengths, a length
        and chunked transfer: the request smuggling cases of RFC 9112 §6.3) is refused."""
        lengths = self.headers.get_all("Content-Length") or []
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if len(lengths) > 1:
            raise BadBodyError("more than one Content-Length header")
        if lengths and chunked:
            raise BadBodyError("both Content-Length and Transfer-Encoding: chunked")
        if not lengths:
            return None, chunked
        if not lengths[0].strip().isdigit():
            raise BadBodyError(f"Content-Length {lengths[0][:20]!r} is not a non-negative number")
        return int(lengths[0]), False

    def _skip_body(self) -> None:
        """A request with a body the handler does not read: the connection closes after the answer."""
        if self.headers.get("Content-Length", "0").strip() not in ("", "0") or "Transfer-Encoding" in self.headers:
            self.close_connection = True

    # -- execution ------------------------------------------------------------------------

    def _execute(self, request: _Request, body: PeekableBody, is_get: bool) -> str:
        query_param = request.params.get("query", "")
        if is_get:
            body = PeekableBody(iter(()))
        statement, insert = self._statement(query_param, body)
        if not statement.strip():
            raise ClickHouseError(SYNTAX_ERROR, "Empty query (SYNTAX_ERROR)")
        if insert is None and into_outfile(statement):
            raise ClickHouseError(INTO_OUTFILE_NOT_ALLOWED, "INTO OUTFILE is not allowed (INTO_OUTFILE_NOT_ALLOWED)")
        if request.reader:
            self._check_reader(statement, insert is not None, request)
        with self._connection(request, statement) as conn:
            if insert is not None:
                fmt, data = insert
                self._run_insert(conn, statement, fmt, data, request)
                return "insert"
            self._run_query(conn, statement, request)
            return "query"

    def _check_reader(self, statement: str, is_insert: bool, request: _Request) -> None:
        if is_insert:
            raise ClickHouseError(READONLY, "Cannot execute query in readonly mode: a read-only user may not "
                                            "INSERT (READONLY)")
        engine = self.server.engine  # explain_ast refuses several statements with the parser's own error
        check_reader_statement(engine.explain_ast(statement, request.query_params),
                               engine.table_functions)

    def _statement(self, query_param: str, body: PeekableBody) -> tuple[str, tuple[str, Iterator[bytes]] | None]:
        """The statement text, and for an INSERT with inline rows: their format and bytes. Query text
        longer than ClickHouse's max_query_size is refused as its parser refuses it."""
        if query_param:
            text = query_param + "\n"  # ClickHouse joins the parameter and the body with a newline
            split = split_insert(text)
            if split is not None:
                return _escaped(split.head), (split.format, _prepend(
                    text[split.data_offset:].encode("utf-8", "surrogateescape"), body))
            rest = _query_text(body, MAX_QUERY_SIZE - len(text))
            return _escaped(text + rest.decode("utf-8", "surrogateescape") if rest else query_param), None
        prefix = b""
        while True:
            try:
                split = split_insert(prefix.decode("latin-1"), complete=body.exhausted)
                break
            except NeedMoreTextError:
                if len(prefix) > MAX_QUERY_SIZE:
                    raise _query_too_large("the INSERT head") from None
                more = body.read_more()
                if more is not None:
                    prefix += more
        if split is not None:
            head = _decoded(split.head.encode("latin-1"))
            return head, (split.format, _prepend(prefix[split.data_offset:], body))
        rest = prefix + _query_text(body, MAX_QUERY_SIZE - len(prefix))
        return _decoded(rest), None

    @contextlib.contextmanager
    def _connection(self, request: _Request, statement: str) -> Iterator[Any]:
        engine = self.server.engine
        session_id = request.params.get("session_id")
        if session_id and not request.reader and "readonly" not in request.settings:
            timeout = _session_timeout(request.params.get("session_timeout"))
            check = request.params.get("session_check") in ("1", "true")
            with self.server.sessions.use(session_id, timeout, check) as conn:
                for name, value in request.settings.items():
                    conn.query(f"SET {name} = {_literal(value)}")
                if request.database:
                    conn.query(f"USE {_identifier(request.database)}")
                yield conn
            return
        with engine.stateless(request.settings, request.database, statement) as conn:
            yield conn

    def _run_insert(self, conn: Any, head: str, fmt: str, data: Iterator[bytes], request: _Request) -> None:
        """Rows stream into the engine as they arrive; the INSERT commits only when the whole body
        arrived intact (a truncated or corrupt body cancels it, so nothing of it is kept)."""
        started = time.perf_counter()
        inserter = conn.send_insert(head, fmt)
        try:
            for chunk in data:
                inserter.append(chunk)
        except BaseException:
            with contextlib.suppress(Exception):
                inserter.cancel()
            raise
        result = inserter.finish()
        self.server.metrics.inserted_rows.inc(result.rows_written)
        summary = _summary(written_rows=result.rows_written, written_bytes=result.bytes_written,
                           elapsed_s=time.perf_counter() - started)
        self._send(200, b"", self._headers(request, DEFAULT_FORMAT, summary))

    def _run_query(self, conn: Any, statement: str, request: _Request) -> None:
        """The result is buffered up to BUFFER_BEFORE_STREAMING (then it has a Content-Length and a
        late error is still an HTTP error), streamed after that. The query is cancelled when its client
        goes away, and a reader's result stops at ``reader_access.MAX_RESULT_BYTES``."""
        started = time.perf_counter()
        fmt = request.default_format
        shown_format = output_format(statement) or fmt
        revision = _client_revision(request.params.get("client_protocol_version"))
        stream = self._result_stream(conn, statement, fmt, request.query_params)
        if revision and shown_format.lower() == "native":
            stream = _RevisedStream(stream, revision)
        limit = MAX_RESULT_BYTES if request.reader else None
        wait = request.params.get("wait_end_of_query") in ("1", "true")
        buffered, size, rows = [], 0, 0
        finished = False
        try:
            for chunk in stream:
                buffered.append(chunk.bytes())
                size += len(buffered[-1])
                rows += chunk.rows_read()
                self._check_result(size, limit)
                if size > BUFFER_BEFORE_STREAMING and not wait:
                    break
            else:
                finished = True
        except BaseException:
            _cancel(stream)
            raise
        if finished and size == 0 and shown_format.lower() == "native":
            buffered = [self._empty_native(conn, statement, revision)]
            size = len(buffered[0])
        headers = self._headers(request, shown_format, _summary(read_rows=rows, result_bytes=size,
                                                                 elapsed_s=time.perf_counter() - started))
        if finished:
            self._send(200, b"".join(buffered), headers)
            return
        self._send_chunked(headers, buffered, stream, size, limit, request.exception_tag)

    @staticmethod
    def _empty_native(conn: Any, statement: str, revision: int) -> bytes:
        """The header block of an empty Native result (the engine writes none): the result's columns
        from ``DESCRIBE`` of the query, framed for the client's revision."""
        subquery = describable(statement)
        if subquery is None:
            return b""
        try:
            described = conn.query(f"DESCRIBE TABLE ({subquery}\n)", "JSONEachRow").bytes().decode()
        except (RuntimeError, chdb.ChdbError):  # what the lexer took for its end was not: no header
            return b""
        columns = [(row["name"], row["type"]) for row in map(json.loads, described.splitlines()) if row]
        reviser = NativeReviser(revision)
        return reviser.feed(header_block(columns))

    def _check_result(self, size: int, limit: int | None) -> None:
        if limit is not None and size > limit:
            raise ClickHouseError(TOO_MANY_ROWS_OR_BYTES, f"Limit for result exceeded, max bytes: {limit} "
                                                          "(TOO_MANY_ROWS_OR_BYTES)")
        if client_has_gone(self.connection):
            raise ClientGoneError()

    @staticmethod
    def _result_stream(conn: Any, statement: str, fmt: str, params: dict[str, str]) -> Any:
        try:
            return conn.send_query(statement, fmt, params=params)
        except (RuntimeError, chdb.ChdbError) as exc:
            error = ClickHouseError.from_engine(exc)
            if error.code != STREAMING_NOT_SUPPORTED or "Streaming query is not supported" not in error.message:
                raise error from None
            return iter([conn.query(statement, fmt, params=params)])

    # -- responses ------------------------------------------------------------------------

    def _headers(self, request: _Request, fmt: str, summary: str) -> dict[str, str]:
        return {
            "Content-Type": _CONTENT_TYPES.get(fmt.lower(), "application/octet-stream"),
            "X-ClickHouse-Server-Display-Name": "shoppulse-local",
            "X-ClickHouse-Query-Id": request.query_id,
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Timezone": self.server.engine.timezone,
            "X-ClickHouse-Summary": summary,
            "X-ClickHouse-Exception-Tag": request.exception_tag,
        }

    def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Keep-Alive", "timeout=10")
        self.end_headers()
        self.wfile.write(payload)

    def _send_chunked(self, headers: dict[str, str], first: list[bytes], stream: Any, size: int,
                      limit: int | None, tag: str) -> None:
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for piece in first:
                self._write_chunk(piece)
            for chunk in stream:
                piece = chunk.bytes()
                size += len(piece)
                self._check_result(size, limit)
                self._write_chunk(piece)
        except (RuntimeError, chdb.ChdbError, ClickHouseError) as exc:
            # Like ClickHouse: the error goes into the body, framed with the response's tag, and
            # the stream is cut without its terminating chunk, so the client sees a failed response.
            _cancel(stream)
            error = exc if isinstance(exc, ClickHouseError) else ClickHouseError.from_engine(exc)
            self._write_chunk(exception_block(tag, error.body(self.server.engine.version)))
            self.close_connection = True
            return
        except BaseException:  # the client went away: stop the query
            _cancel(stream)
            raise
        self.wfile.write(b"0\r\n\r\n")

    def _write_chunk(self, piece: bytes) -> None:
        if piece:
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")

    def _send_error(self, exc: ClickHouseError, query_id: str, status: int | None = None) -> None:
        payload = exc.body(self.server.engine.version)
        self.send_response(status or exc.http_status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("X-ClickHouse-Exception-Code", str(exc.code))
        self.send_header("X-ClickHouse-Server-Display-Name", "shoppulse-local")
        if query_id:
            self.send_header("X-ClickHouse-Query-Id", query_id)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)


def form_fields(content_type: str, body: PeekableBody) -> str | None:
    """A POST body of form fields (``application/x-www-form-urlencoded`` or ``multipart/form-data``, as
    clickhouse-connect sends long query parameters and ClickHouse's HTTP handler reads them) as one
    query string; None for any other body (the query text itself)."""
    header = Message()
    header["Content-Type"] = content_type or "text/plain"
    kind = header.get_content_type()
    if kind not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return None
    try:
        raw = body.read_all(MAX_FORM_SIZE)
    except BodyTooLongError:
        raise _query_too_large("the form") from None
    if kind == "application/x-www-form-urlencoded":
        return raw.decode("utf-8", "surrogateescape")
    parsed = BytesParser(policy=email_policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + raw)
    if not parsed.is_multipart():
        raise ClickHouseError(CANNOT_PARSE_INPUT, "a multipart/form-data body without its parts (or its boundary) "
                                                  "(CANNOT_PARSE_INPUT_ASSERTION_FAILED)")
    fields = []
    for part in parsed.iter_parts():
        if part.get_filename() is not None:
            raise ClickHouseError(NOT_IMPLEMENTED, "external tables (a file part of a multipart/form-data body) "
                                                   "are not supported by the local endpoint (NOT_IMPLEMENTED)")
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            raise ClickHouseError(CANNOT_PARSE_INPUT, "a form part without a name "
                                                      "(CANNOT_PARSE_INPUT_ASSERTION_FAILED)")
        fields.append((name, payload.decode("utf-8", "surrogateescape")))
    return urlencode(fields)


def _client_revision(value: str | None) -> int:
    """The Native revision the client reads (``client_protocol_version``; 0 when not given)."""
    if not value:
        return 0
    if not value.isdigit():
        raise ClickHouseError(CANNOT_PARSE_TEXT, f"Cannot parse input: expected an unsigned integer as "
                                                 f"client_protocol_version, got {value[:40]!r} (CANNOT_PARSE_TEXT)")
    return int(value)


@dataclass(frozen=True)
class _Piece:
    data: bytes
    rows: int

    def bytes(self) -> bytes:
        return self.data

    def rows_read(self) -> int:
        return self.rows


class _RevisedStream:
    """The engine's result with its Native blocks re-framed for the client's revision."""

    def __init__(self, stream: Any, revision: int) -> None:
        self._stream, self._reviser = stream, NativeReviser(revision)

    def __iter__(self) -> Iterator[_Piece]:
        try:
            for chunk in self._stream:
                yield _Piece(self._reviser.feed(chunk.bytes()), chunk.rows_read())
            self._reviser.finish()
        except NativeFormatError as exc:
            raise ClickHouseError(NOT_IMPLEMENTED, f"{exc} (NOT_IMPLEMENTED)") from None

    def cancel(self) -> None:
        _cancel(self._stream)


def _cancel(stream: Any) -> None:
    with contextlib.suppress(Exception):
        getattr(stream, "cancel", lambda: None)()


def _query_text(body: PeekableBody, limit: int) -> bytes:
    try:
        return body.read_all(max(limit, 0))
    except BodyTooLongError:
        raise _query_too_large("the query") from None


def _query_too_large(what: str) -> ClickHouseError:
    return ClickHouseError(SYNTAX_ERROR,  # what the server's parser says of an over-long query
                           f"Syntax error: Max query size exceeded: {what} is over {MAX_QUERY_SIZE} bytes "
                           "(max_query_size) (SYNTAX_ERROR)")


def _decoded(text: bytes) -> str:
    return _escaped(text.decode("utf-8", "surrogateescape"))


def _escaped(text: str) -> str:
    """Query text (bytes that are not UTF-8 kept as ``surrogateescape`` characters) as the engine takes
    it: such bytes inside string literals become their ``\\xHH`` escapes (a ClickHouse server reads the
    query as bytes), elsewhere a syntax error."""
    try:
        return escape_raw_bytes(text)
    except UnterminatedError:  # the engine's parser reports the unterminated literal
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except RawByteError as exc:
        raise ClickHouseError(SYNTAX_ERROR, f"Syntax error: failed at position {exc.offset + 1}: a byte that is "
                                            "not UTF-8 outside a string literal (SYNTAX_ERROR)") from None


def _session_timeout(value: str | None) -> float:
    """``session_timeout``: whole seconds from 1 to ClickHouse's max_session_timeout."""
    if not value:
        return SESSION_TIMEOUT_S
    if not value.isdigit() or not 0 < int(value) <= MAX_SESSION_TIMEOUT_S:
        raise ClickHouseError(INVALID_SESSION_TIMEOUT, f"Invalid session timeout: {value[:40]!r}, it must be whole "
                                                       f"seconds from 1 to {MAX_SESSION_TIMEOUT_S} "
                                                       "(INVALID_SESSION_TIMEOUT)")
    return float(value)


def _prepend(first: bytes, rest: PeekableBody) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _summary(read_rows: int = 0, written_rows: int = 0, written_bytes: int = 0, result_bytes: int = 0,
             elapsed_s: float = 0.0) -> str:
    return json.dumps({
        "read_rows": str(read_rows), "read_bytes": "0", "written_rows": str(written_rows),
        "written_bytes": str(written_bytes), "total_rows_to_read": str(read_rows),
        "result_rows": str(read_rows), "result_bytes": str(result_bytes),
        "elapsed_ns": str(int(elapsed_s * 1e9)),
    }, separators=(",", ":"))


def serve(data_dir: Path, host: str, port: int, user: str, password: str,
          ready: threading.Event | None = None, stop: threading.Event | None = None,
          readers: dict[str, str] | None = None) -> None:
    """Run the endpoint until ``stop`` is set (or the process gets SIGTERM/SIGINT)."""
    engine = Engine(data_dir)
    try:
        server = ClickHouseHTTPServer((host, port), engine, user, password, readers)
    except OSError as exc:
        engine.close()
        raise StartupError(f"the ClickHouse endpoint cannot listen on {host}:{port}: {exc.strerror}; "
                           "choose another port with SHOPPULSE_CLICKHOUSE_PORT=<port>") from None
    log.info("clickhouse endpoint listening",
             extra={"url": f"http://{host}:{port}", "data_dir": str(data_dir), "engine": engine.version})
    thread = threading.Thread(target=server.serve_forever, name="clickhouse-http", daemon=True)
    thread.start()
    if ready is not None:
        ready.set()
    stop = stop or threading.Event()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        server.server_close()
        server.sessions.close()
        engine.close()
        log.info("clickhouse endpoint stopped", extra={"url": f"http://{host}:{port}"})


@contextlib.contextmanager
def embedded_endpoint(data_dir: Path, host: str = "127.0.0.1", user: str = "default",
                      password: str = "") -> Iterator[str]:
    """An endpoint on a free port in this process, for one-shot tools (lint, preview, bench);
    yields its URL and stops it, engine included, on exit."""
    engine = Engine(data_dir)
    try:
        server = ClickHouseHTTPServer((host, 0), engine, user, password)
    except OSError as exc:
        engine.close()
        raise StartupError(f"the embedded ClickHouse endpoint cannot listen on {host}: {exc.strerror}") from None
    thread = threading.Thread(target=server.serve_forever, name="clickhouse-http", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        server.sessions.close()
        engine.close()
