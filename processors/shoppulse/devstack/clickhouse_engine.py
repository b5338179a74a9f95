"""The embedded ClickHouse engine behind the local endpoint: one owner of the database folder,
a pool of idle connections for requests outside a session, and HTTP sessions."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chdb

from shoppulse.devstack.clickhouse_errors import (
    SESSION_IS_LOCKED,
    SESSION_NOT_FOUND,
    USER_SESSION_LIMIT_EXCEEDED,
    ClickHouseError,
)
from shoppulse.devstack.process import StartupError
from shoppulse.sql_text import UnterminatedError, first_word

SESSION_TIMEOUT_S = 60
# Statements after which a connection is as it was opened (no SET, USE or temporary table), so it
# may serve the next request with the same settings and database; at most this many wait idle.
STATELESS_STATEMENTS = frozenset({"SELECT", "WITH", "INSERT", "EXPLAIN", "SHOW", "DESCRIBE", "DESC", "EXISTS"})
MAX_IDLE_PER_KEY = 4


MAX_SESSIONS = 100  # HTTP sessions open at once; each holds an engine connection (~1 MB)
MAX_SESSION_TIMEOUT_S = 3600  # ClickHouse's max_session_timeout


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _tsv_escaped(value: str) -> str:
    """A String query parameter's value as ClickHouse reads it (escaped TabSeparated)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class Engine:
    """The embedded ClickHouse engine over one database folder, owned by this process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._lock_file = (path / ".owner.lock").open("a+")
        except OSError as exc:
            raise StartupError(f"cannot use {path} as the ClickHouse data folder ({exc.strerror}): choose a folder "
                               "this user may write (--data-dir, or SHOPPULSE_DATA_DIR for the stack)") from None
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
        self.table_functions = frozenset(
            str(self._root.query("SELECT name FROM system.table_functions", "TSVRaw")).split())
        self._setting_values: dict[str, str | None] = {}
        self._root_lock = threading.Lock()
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

    def setting_value(self, name: str) -> str | None:
        """A setting's value on a fresh connection (None: no such setting)."""
        if name not in self._setting_values:
            with self._root_lock:
                rows = str(self._root.query("SELECT value FROM system.settings WHERE name = {n:String}", "TSVRaw",
                                            params={"n": name}))
            self._setting_values[name] = rows[:-1] if rows.endswith("\n") else (rows or None)
        return self._setting_values[name]

    def explain_ast(self, statement: str, params: dict[str, str]) -> str:
        """The statement as ClickHouse's own parser reads it (``EXPLAIN AST``), on a read-only
        connection; a statement that does not parse raises the engine's error. EXPLAIN cannot stream
        and the engine runs every statement of a text it is given outside streaming, so the parser
        first confirms the text is one statement (``formatQuery`` refuses several)."""
        with self.stateless({"readonly": "1"}, None, "SELECT") as conn:
            for _ in conn.send_query("SELECT formatQuery({statement:String})", "TSVRaw",
                                     params={"statement": _tsv_escaped(statement)}):
                pass
            return str(conn.query(f"EXPLAIN AST {statement}", "TSVRaw", params=params))

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
                if len(self._sessions) >= MAX_SESSIONS:
                    raise ClickHouseError(USER_SESSION_LIMIT_EXCEEDED,
                                          f"Too many open sessions ({MAX_SESSIONS}): reuse a session_id or wait for "
                                          "idle ones to time out (USER_SESSION_LIMIT_EXCEEDED)")
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
