"""One JSON answer from a ``http.server`` handler (status, content type and length, body), and the refusal
its handlers answer with."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


def answer_json(handler: BaseHTTPRequestHandler, status: int, body: object) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class RefusedError(Exception):
    """A request that is not taken: ``status`` is the HTTP answer, the message says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
