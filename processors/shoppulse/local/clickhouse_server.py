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
import fcntl
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from shoppulse.local.http_body import BadBodyError, PeekableBody, decoded_chunks, raw_chunks
from shoppulse.local.process import StartupError
from shoppulse.sql_text import NeedMoreTextError, UnterminatedError, first_word, output_format, split_insert

log = logging.getLogger(__name__)

MAX_QUERY_SIZE = 256 * 1024  # ClickHouse's default max_query_size, bytes
MAX_QUERY_BODY = 16 * 1024 * 1024  # a non-INSERT body is query text; refuse absurd ones
BUFFER_BEFORE_STREAMING = 1 << 20  # results up to this size get a Content-Length
SESSION_TIMEOUT_S = 60
# Statements after which a connection is as it was opened (no SET, USE or temporary table), so it
# may serve the next request with the same settings and database; at most this many wait idle.
STATELESS_STATEMENTS = frozenset({"SELECT", "WITH", "INSERT", "EXPLAIN", "SHOW", "DESCRIBE", "DESC", "EXISTS"})
MAX_IDLE_PER_KEY = 4
SOCKET_TIMEOUT_S = 300
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
_ERROR = re.compile(r"Code:\s*(\d+)\.\s*(?:DB::Exception:\s*)?(.*)", re.S)
_ERROR_NAME = re.compile(r"\(([A-Z_]+)\)\s*(?:\(version [^)]*\))?\s*$")

# ClickHouse error codes used by the endpoint itself.
UNSUPPORTED_METHOD = 1
SYNTAX_ERROR = 62
NOT_IMPLEMENTED = 48
UNKNOWN_SETTING = 115
READONLY = 164
SESSION_IS_LOCKED = 373
SESSION_NOT_FOUND = 372
CANNOT_PARSE_INPUT = 27
AUTHENTICATION_FAILED = 516
STREAMING_NOT_SUPPORTED = 36
STD_EXCEPTION = 1001

# The HTTP status of an error, as ClickHouse's server gives it (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp);
# every other code is 500. Clients and scripts that branch on the status see what a ClickHouse server sends.
_STATUS_BY_CODE = {
    194: 401,  # REQUIRED_PASSWORD
    # UNKNOWN_USER, WRONG_PASSWORD, SET_NON_GRANTED_ROLE, ACCESS_DENIED, AUTHENTICATION_FAILED
    **dict.fromkeys((192, 193, 512, 497, AUTHENTICATION_FAILED), 403),
    # bad arguments, text that does not parse, bad column lists, ASTs too deep or big, type mismatches
    **dict.fromkeys((36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, CANNOT_PARSE_INPUT, 376, 15, 44, 37, 123, 8,
                     167, 168, 223, SYNTAX_ERROR, 117, 53, 321), 400),
    # unknown table, function, identifier, type, storage, database, setting, sorting direction, aggregate
    # function, format, database engine, type of query, role
    **dict.fromkeys((60, 46, 47, 50, 56, 81, UNKNOWN_SETTING, 152, 63, 73, 336, 78, 511), 404),
    229: 413,  # QUERY_IS_TOO_LARGE
    NOT_IMPLEMENTED: 501,
    **dict.fromkeys((209, 76, 439), 503),  # SOCKET_TIMEOUT, CANNOT_OPEN_FILE, CANNOT_SCHEDULE_TASK
    381: 411,  # HTTP_LENGTH_REQUIRED
    159: 408,  # TIMEOUT_EXCEEDED
    779: 415,  # UNSUPPORTED_MEDIA_TYPE
}

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


class ClickHouseError(Exception):
    """An error in ClickHouse's terms: a numeric code and the exception text."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def from_engine(cls, exc: BaseException) -> ClickHouseError:
        text = str(exc).strip()
        text = re.sub(r"^(Streaming (query|insert) (failed|finish failed):\s*)", "", text)
        match = _ERROR.search(text)
        if match is None:
            return cls(1000, text or type(exc).__name__)
        return cls(int(match.group(1)), match.group(2).strip())

    @property
    def http_status(self) -> int:
        return _STATUS_BY_CODE.get(self.code, 500)

    def body(self, version: str) -> bytes:
        text = self.message
        if _ERROR_NAME.search(text) is None:
            text = f"{text}."
        if "(version " not in text:
            text = f"{text} (version {version})"
        return f"Code: {self.code}. DB::Exception: {text}\n".encode()


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class Engine:
    """The embedded ClickHouse engine over one database folder, owned by this process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._lock_file = (path / ".owner.lock").open("a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = (path / ".owner.lock").read_text().strip() or "another process"
            raise StartupError(
                f"the ClickHouse data folder {path} is already owned by pid {owner}: "
                "stop that process or use another SHOPPULSE_DATA_DIR"
            ) from None
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()
        # The root connection keeps the embedded server alive for the process' lifetime.
        self._root = chdb.connect(str(path))
        version, timezone = str(self._root.query("SELECT version(), timezone()", "TSV")).strip().split("\t")
        self.version = version
        self.timezone = timezone
        self._idle: dict[tuple[tuple[tuple[str, str], ...], str | None], list[Any]] = {}
        self._idle_lock = threading.Lock()
        self._closed = False
        self.on_connect: Callable[[], None] = lambda: None

    @contextlib.contextmanager
    def stateless(self, settings: dict[str, str], database: str | None, statement: str) -> Iterator[Any]:
        """A connection for one request outside a session: an idle one opened with the same
        settings and database if there is one, else a fresh one. Opening one and applying its
        settings costs about as much as a small query, and the processors' sinks, the sidecar and
        the dashboards send many small queries. It goes back idle only after a statement that
        succeeded and cannot change session state (``STATELESS_STATEMENTS``)."""
        try:
            reusable = first_word(statement) in STATELESS_STATEMENTS
        except UnterminatedError:  # the engine reports the syntax error
            reusable = False
        key = (tuple(sorted(settings.items())), database)
        with self._idle_lock:
            idle = self._idle.get(key)
            conn = idle.pop() if idle else None
        if conn is None:
            conn = self.connect(settings, database)
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        if reusable:
            with self._idle_lock:
                idle = self._idle.setdefault(key, [])
                if not self._closed and len(idle) < MAX_IDLE_PER_KEY:
                    idle.append(conn)
                    return
        conn.close()

    def connect(self, settings: dict[str, str], database: str | None) -> Any:
        """A fresh connection (its own session context) with ``settings`` applied."""
        self.on_connect()
        conn = chdb.connect(str(self.path))
        try:
            readonly = settings.get("readonly")
            for name, value in settings.items():
                if name != "readonly":
                    conn.query(f"SET {name} = {_literal(value)}")
            if readonly is not None:
                conn.query(f"SET readonly = {_literal(readonly)}")
            if database:
                conn.query(f"USE {_identifier(database)}")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        with self._idle_lock:
            self._closed = True
            idle = [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()
        with contextlib.suppress(Exception):
            self._root.close()
        self._lock_file.close()


@dataclass
class _Session:
    conn: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    timeout_s: float = SESSION_TIMEOUT_S
    last_used: float = field(default_factory=time.monotonic)


class Sessions:
    """HTTP sessions (``session_id``): a connection whose SET statements and temporary
    tables persist between requests, used by one request at a time, dropped when idle."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def use(self, session_id: str, timeout_s: float, check: bool) -> Iterator[Any]:
        self.expire()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                if check:
                    raise ClickHouseError(SESSION_NOT_FOUND, f"Session {session_id} not found (SESSION_NOT_FOUND)")
                session = _Session(self._engine.connect({}, None), timeout_s=timeout_s)
                self._sessions[session_id] = session
        if not session.lock.acquire(blocking=False):
            raise ClickHouseError(SESSION_IS_LOCKED,
                                  f"Session {session_id} is locked by a concurrent client (SESSION_IS_LOCKED)")
        try:
            yield session.conn
        finally:
            session.last_used = time.monotonic()
            session.timeout_s = timeout_s
            session.lock.release()

    def expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            for sid, session in list(self._sessions.items()):
                if now - session.last_used > session.timeout_s and session.lock.acquire(blocking=False):
                    del self._sessions[sid]
                    session.conn.close()

    def close(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                with contextlib.suppress(Exception):
                    session.conn.close()
            self._sessions.clear()


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
        self.connections = Counter("shoppulse_clickhouse_connections_opened",
                                   "Engine connections opened (idle ones serve later requests)", registry=self.registry)


@dataclass
class _Request:
    params: dict[str, str]
    settings: dict[str, str]
    query_params: dict[str, str]
    query_id: str
    default_format: str
    database: str | None


class ClickHouseHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], engine: Engine, user: str, password: str,
                 readers: dict[str, str] | None = None) -> None:
        """``readers`` (user -> password) may only read: the engine has no access storage of its own,
        so the endpoint enforces them as ClickHouse's readonly setting (the grafana_reader role's job
        on a real server)."""
        super().__init__(address, ClickHouseHandler)
        self.engine = engine
        self.sessions = Sessions(engine)
        self.metrics = EndpointMetrics()
        engine.on_connect = self.metrics.connections.inc
        self.user = user
        self.password = password
        self.readers = {name: secret for name, secret in (readers or {}).items() if name != user}


class ClickHouseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "shoppulse-clickhouse"
    # Headers and body go out in separate writes; with Nagle's algorithm on, a keep-alive client's
    # delayed ACK then holds every response back ~40 ms.
    disable_nagle_algorithm = True
    server: ClickHouseHTTPServer

    def setup(self) -> None:
        super().setup()
        self.request.settimeout(SOCKET_TIMEOUT_S)

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
            self._drain_body()
            self._send(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
            return
        if url.path == "/metrics":
            self._drain_body()
            self._send(200, generate_latest(self.server.metrics.registry), {"Content-Type": CONTENT_TYPE_LATEST})
            return
        if url.path not in ("/", "/query"):
            self._drain_body()
            self._send_error(ClickHouseError(UNSUPPORTED_METHOD, f"There is no handle {url.path}"), "", 404)
            return
        kind = "query"
        query_id = ""
        try:
            request = self._parse_request(url.query, readonly_by_method)
            query_id = request.query_id
            if self._authenticate(request.params) in self.server.readers:
                request.settings["readonly"] = "2"  # reads only, whatever the request asked for
            body = PeekableBody(decoded_chunks(
                raw_chunks(self.rfile, self._content_length(), self._is_chunked()),
                self.headers.get("Content-Encoding", "")))
            if request.params.get("decompress") in ("1", "true"):
                raise ClickHouseError(NOT_IMPLEMENTED, "decompress=1 (ClickHouse's native block compression) is "
                                      "not supported by the local endpoint: use Content-Encoding instead")
            kind = self._execute(request, body, readonly_by_method)
            self.server.metrics.requests.labels(kind, "ok").inc()
        except ClickHouseError as exc:
            self._fail(kind, exc, query_id)
        except BadBodyError as exc:
            self._fail(kind, ClickHouseError(CANNOT_PARSE_INPUT, str(exc)), query_id)
        except (NeedMoreTextError, UnterminatedError) as exc:
            self._fail(kind, ClickHouseError(SYNTAX_ERROR, f"Syntax error: {exc}"), query_id)
        except (RuntimeError, chdb.ChdbError) as exc:
            self._fail(kind, ClickHouseError.from_engine(exc), query_id)
        except Exception as exc:  # a bug of ours must still give the client an answer
            log.exception("endpoint error", extra={"query_id": query_id})
            self._fail(kind, ClickHouseError(STD_EXCEPTION, f"{type(exc).__name__}: {exc} (STD_EXCEPTION)"), query_id)
        finally:
            self.server.metrics.seconds.labels(kind).observe(time.perf_counter() - started)

    def _fail(self, kind: str, exc: ClickHouseError, query_id: str) -> None:
        self.server.metrics.requests.labels(kind, "error").inc()
        self.server.metrics.errors.labels(str(exc.code)).inc()
        log.info("query failed", extra={"query_id": query_id, "code": exc.code, "error": exc.message[:300]})
        # The rest of the body may still be on the wire: the connection cannot be reused.
        self.close_connection = True
        self._send_error(exc, query_id)

    def _parse_request(self, query_string: str, readonly_by_method: bool) -> _Request:
        params = dict(parse_qsl(query_string, keep_blank_values=True))
        settings: dict[str, str] = {}
        query_params: dict[str, str] = {}
        for name, value in params.items():
            if name.startswith("param_"):
                query_params[name[len("param_"):]] = value
            elif name not in _PROTOCOL_PARAMS:
                if not _SETTING_NAME.match(name):
                    raise ClickHouseError(UNKNOWN_SETTING, f"Unknown setting '{name}' (UNKNOWN_SETTING)")
                settings[name] = value
        if readonly_by_method and settings.get("readonly", "0") in ("0", ""):
            settings["readonly"] = "2"  # as ClickHouse does: GET requests cannot change data
        if settings.get("readonly") == "1" and len(settings) > 1:
            raise ClickHouseError(READONLY, "Cannot modify settings in readonly mode (READONLY)")
        return _Request(
            params=params, settings=settings, query_params=query_params,
            query_id=params.get("query_id") or str(uuid.uuid4()),
            default_format=params.get("default_format") or DEFAULT_FORMAT,
            database=params.get("database") or None,
        )

    def _authenticate(self, params: dict[str, str]) -> str:
        """The authenticated user name."""
        user, password = params.get("user"), params.get("password")
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise ClickHouseError(AUTHENTICATION_FAILED, "Malformed Basic authorization header") from None
        user = self.headers.get("X-ClickHouse-User", user) or "default"
        password = self.headers.get("X-ClickHouse-Key", password) or ""
        known = (user == self.server.user and password == self.server.password) or (
            user in self.server.readers and password == self.server.readers[user])
        if not known:
            raise ClickHouseError(
                AUTHENTICATION_FAILED,
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name "
                "(AUTHENTICATION_FAILED)")
        return user

    def _content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        try:
            length = int(value)
        except ValueError:
            raise BadBodyError(f"Content-Length {value!r} is not a number") from None
        if length < 0:
            raise BadBodyError("negative Content-Length")
        return length

    def _is_chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def _drain_body(self) -> None:
        with contextlib.suppress(BadBodyError, ValueError):
            for _ in raw_chunks(self.rfile, self._content_length(), self._is_chunked()):
                pass

    # -- execution ------------------------------------------------------------------------

    def _execute(self, request: _Request, body: PeekableBody, is_get: bool) -> str:
        query_param = request.params.get("query", "")
        if is_get:
            body = PeekableBody(iter(()))
        statement, insert = self._statement(query_param, body)
        if not statement.strip():
            raise ClickHouseError(SYNTAX_ERROR, "Empty query (SYNTAX_ERROR)")
        with self._connection(request, statement) as conn:
            if insert is not None:
                fmt, data = insert
                self._run_insert(conn, statement, fmt, data, request)
                return "insert"
            self._run_query(conn, statement, request)
            return "query"

    def _statement(self, query_param: str, body: PeekableBody) -> tuple[str, tuple[str, Iterator[bytes]] | None]:
        """The statement text, and for an INSERT with inline rows: their format and bytes."""
        if query_param:
            text = query_param + "\n"  # ClickHouse joins the parameter and the body with a newline
            split = split_insert(text)
            if split is not None:
                return split.head, (split.format, _prepend(text[split.data_offset:].encode(), body))
            rest = body.read_all(MAX_QUERY_BODY)
            return (text + rest.decode() if rest else query_param), None
        prefix = b""
        while True:
            try:
                split = split_insert(prefix.decode("latin-1"), complete=body.exhausted)
                break
            except NeedMoreTextError:
                if len(prefix) > MAX_QUERY_SIZE:
                    raise ClickHouseError(SYNTAX_ERROR,  # what the server's parser says of an over-long query
                                          f"Syntax error: Max query size exceeded: the INSERT head is over "
                                          f"{MAX_QUERY_SIZE} bytes (SYNTAX_ERROR)") from None
                more = body.read_more()
                if more is not None:
                    prefix += more
        if split is not None:
            head = split.head.encode("latin-1").decode()
            return head, (split.format, _prepend(prefix[split.data_offset:], body))
        rest = prefix + body.read_all(MAX_QUERY_BODY)
        return rest.decode(), None

    @contextlib.contextmanager
    def _connection(self, request: _Request, statement: str) -> Iterator[Any]:
        engine = self.server.engine
        session_id = request.params.get("session_id")
        if session_id and "readonly" not in request.settings:
            timeout = float(request.params.get("session_timeout") or SESSION_TIMEOUT_S)
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
        started = time.perf_counter()
        fmt = request.default_format
        shown_format = output_format(statement) or fmt
        chunks = self._result_chunks(conn, statement, fmt, request.query_params)
        wait = request.params.get("wait_end_of_query") in ("1", "true")
        buffered, size, rows = [], 0, 0
        finished = False
        for chunk in chunks:
            buffered.append(chunk.bytes())
            size += len(buffered[-1])
            rows += chunk.rows_read()
            if size > BUFFER_BEFORE_STREAMING and not wait:
                break
        else:
            finished = True
        headers = self._headers(request, shown_format, _summary(read_rows=rows, result_bytes=size,
                                                                 elapsed_s=time.perf_counter() - started))
        if finished:
            self._send(200, b"".join(buffered), headers)
            return
        self._send_chunked(headers, buffered, (c.bytes() for c in chunks))

    def _result_chunks(self, conn: Any, statement: str, fmt: str, params: dict[str, str]) -> Iterator[Any]:
        try:
            stream = conn.send_query(statement, fmt, params=params)
        except (RuntimeError, chdb.ChdbError) as exc:
            error = ClickHouseError.from_engine(exc)
            if error.code != STREAMING_NOT_SUPPORTED or "Streaming query is not supported" not in error.message:
                raise error from None
            return iter([conn.query(statement, fmt, params=params)])
        return iter(stream)

    # -- responses ------------------------------------------------------------------------

    def _headers(self, request: _Request, fmt: str, summary: str) -> dict[str, str]:
        return {
            "Content-Type": _CONTENT_TYPES.get(fmt.lower(), "application/octet-stream"),
            "X-ClickHouse-Server-Display-Name": "shoppulse-local",
            "X-ClickHouse-Query-Id": request.query_id,
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Timezone": self.server.engine.timezone,
            "X-ClickHouse-Summary": summary,
        }

    def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Keep-Alive", "timeout=10")
        self.end_headers()
        self.wfile.write(payload)

    def _send_chunked(self, headers: dict[str, str], first: list[bytes], rest: Iterator[bytes]) -> None:
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for piece in [*first]:
                self._write_chunk(piece)
            for piece in rest:
                self._write_chunk(piece)
        except (RuntimeError, chdb.ChdbError) as exc:
            # Like ClickHouse: the error text goes into the body and the stream is cut
            # without its terminating chunk, so the client sees a failed response.
            error = ClickHouseError.from_engine(exc)
            self._write_chunk(error.body(self.server.engine.version))
            self.close_connection = True
            return
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
