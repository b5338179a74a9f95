"""What every HTTP stand-in shares: a threaded server on a free local port, holding the stand-in's state
for its handler, served from a background thread for as long as the test needs it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Generic, TypeVar

StateT = TypeVar("StateT")


class StandinServer(ThreadingHTTPServer, Generic[StateT]):
    daemon_threads = True

    def __init__(self, state: StateT, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.state = state


@contextlib.contextmanager
def serving(state: StateT, handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` (which reads ``self.server.state``) until the block ends; yields the base URL."""
    server = StandinServer(state, handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
