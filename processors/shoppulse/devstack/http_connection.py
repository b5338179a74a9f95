"""One client connection of the local endpoint, with the time limits of a real server.

A thread serves each connection, so a client that sends slowly or not at all must not hold
one for long: the request line and headers have ``HEADERS_TIMEOUT_S`` in all (a keep-alive
connection's wait for its next request included, so slowloris clients are dropped however
they pace their bytes), every later read of the body waits at most ``RECEIVE_TIMEOUT_S`` (as
ClickHouse's ``http_receive_timeout``) and every write ``SEND_TIMEOUT_S``."""

from __future__ import annotations

import io
import select
import socket
import time

HEADERS_TIMEOUT_S = 10.0  # also the advertised keep-alive timeout (ClickHouse's keep_alive_timeout)
RECEIVE_TIMEOUT_S = 30.0  # ClickHouse's http_receive_timeout
SEND_TIMEOUT_S = 30.0  # ClickHouse's http_send_timeout


class DeadlineSocketIO(socket.SocketIO):
    """A socket reader whose every receive waits at most ``RECEIVE_TIMEOUT_S`` and never past
    ``deadline`` (monotonic seconds; None: no deadline). A receive that times out raises
    ``TimeoutError``, which the HTTP server treats as a request that timed out."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, "rb")
        self._socket = sock
        self.deadline: float | None = None

    def readinto(self, buffer: memoryview | bytearray) -> int | None:  # type: ignore[override]
        timeout = RECEIVE_TIMEOUT_S
        if self.deadline is not None:
            timeout = min(timeout, self.deadline - time.monotonic())
            if timeout <= 0:
                raise TimeoutError("the request's headers did not arrive in time")
        self._socket.settimeout(timeout)
        try:
            return super().readinto(buffer)
        finally:
            self._socket.settimeout(SEND_TIMEOUT_S)


def deadline_reader(sock: socket.socket) -> tuple[io.BufferedReader, DeadlineSocketIO]:
    """A buffered reader over ``sock`` and its raw reader, whose deadline the caller sets."""
    raw = DeadlineSocketIO(sock)
    return io.BufferedReader(raw), raw


def client_has_gone(sock: socket.socket) -> bool:
    """True when the client has closed its side (or reset it): its query's result has no reader.
    Bytes waiting to be read (a pipelined request) mean it is still there."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    try:
        if not poller.poll(0):
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
