"""A stand-in for a shop's admin API, for tests: the calls an action policy makes (a payment failover
and its failback; manual review of a country's new orders and its end), over a real socket, with the
contract a careful shop API enforces.

No shop's admin API is public, so the contract is the IETF's for the one thing every such API must
get right for automation — retries — `The Idempotency-Key HTTP Header Field`
(draft-ietf-httpapi-idempotency-key-header-07, October 2025):

- every POST carries ``Idempotency-Key`` as a Structured Field string (``"…"``, RFC 8941); without it
  the answer is 400, with a key that is no sf-string 400 too;
- a request whose key was seen with the same payload is answered with the first answer again and
  changes nothing; with another payload, 422; while the first request with that key is still being
  processed, 409;
- besides: a bearer token (401 without the right one), a JSON object body (400 otherwise), known
  paths only (404), a failover of a gateway the country does not use is refused (422), and so is a
  review of a country the shop does not sell in, or the end of one that is not under way.

``fail_next`` makes the next requests fail for the test's sake: ``"503"`` answers 503 before doing
anything; ``"drop"`` applies the change and then closes the connection without an answer (the
retry must not apply it twice). ``hold_s`` keeps each answer back that long after the change is
applied (time for a test to kill the caller between the change and its record).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from shoppulse.devstack.http_standin import StandinServer, serving
from shoppulse.events.schema import COUNTRIES
from shoppulse.http_json import answer_json

SF_STRING = re.compile(r'^"([\x20-\x21\x23-\x5b\x5d-\x7e]|\\["\\])*"$')
GATEWAYS = {"BR": ("pix", "adyen"), "DE": ("adyen", "klarna", "paypal"), "US": ("stripe", "paypal", "adyen")}


@dataclass
class ShopState:
    token: str
    routes: dict[str, str | None] = field(default_factory=dict)  # country -> the gateway failed over from
    reviews: dict[str, str] = field(default_factory=dict)  # country -> why its new orders are reviewed by hand
    effects: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # every change applied, in order
    answers: dict[str, tuple[str, int, dict[str, Any]]] = field(default_factory=dict)  # key -> payload digest, answer
    in_flight: set[str] = field(default_factory=set)
    fail_next: list[str] = field(default_factory=list)
    requests: int = 0
    hold_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    effects_lock: threading.Lock = field(default_factory=threading.Lock)

    def apply(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        country, known = body.get("country"), GATEWAYS.get(str(body.get("country")))
        if path == "/admin/payments/failover":
            gateway = body.get("from_gateway")
            if known is None or gateway not in known:
                return 422, {"error": f"{country} does not pay through {gateway}"}
            self.routes[str(country)] = str(gateway)
        elif path == "/admin/payments/failback":
            if known is None or self.routes.get(str(country)) != body.get("gateway"):
                return 422, {"error": f"{country} is not failed over from {body.get('gateway')}"}
            self.routes[str(country)] = None
        elif path == "/admin/orders/review":
            if country not in COUNTRIES or not isinstance(body.get("reason"), str) or not body["reason"]:
                return 422, {"error": "a review needs a country the shop sells in and a reason"}
            self.reviews[str(country)] = body["reason"]
        elif path == "/admin/orders/review/end":
            if self.reviews.pop(str(country), None) is None:
                return 422, {"error": f"the new orders of {country} are not under review"}
        else:
            return 404, {"error": f"no such endpoint {path}"}
        self.effects.append((path, body))
        return 200, {"ok": True, "country": country}


class _Handler(BaseHTTPRequestHandler):
    server: StandinServer[ShopState]

    def log_message(self, *_args: Any) -> None:  # quiet in tests
        pass


    def do_POST(self) -> None:
        state = self.server.state
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with state.lock:
            state.requests += 1
            failure = state.fail_next.pop(0) if state.fail_next else None
        if failure == "503":
            answer_json(self, 503, {"error": "temporarily unavailable"})
            return
        if self.headers.get("Authorization") != f"Bearer {state.token}":
            answer_json(self, 401, {"error": "a valid bearer token is required"})
            return
        key = self.headers.get("Idempotency-Key")
        if key is None:
            answer_json(self, 400, {"error": "Idempotency-Key is required for this request"})
            return
        if not SF_STRING.match(key):
            answer_json(self, 400, {"error": "Idempotency-Key must be a Structured Field string"})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            answer_json(self, 400, {"error": "the body must be a JSON object"})
            return
        digest = hashlib.sha256(self.path.encode() + b"\0" + raw).hexdigest()
        with state.lock:
            seen, busy = state.answers.get(key), key in state.in_flight
            if seen is None and not busy:
                state.in_flight.add(key)
        if seen is None and busy:
            status, answer = 409, {"error": "a request with this Idempotency-Key is being processed"}
        elif seen is not None:
            status, answer = (seen[1], seen[2]) if seen[0] == digest else (
                422, {"error": "this Idempotency-Key was used with another payload"})
        else:
            with state.effects_lock:
                status, answer = state.apply(self.path, body)
            with state.lock:
                state.answers[key] = (digest, status, answer)
                state.in_flight.discard(key)
            time.sleep(state.hold_s)
        if failure == "drop":
            self.close_connection = True
            self.connection.shutdown(2)  # applied, never answered
            return
        answer_json(self, status, answer)


@contextlib.contextmanager
def shop_admin_standin(token: str) -> Iterator[tuple[str, ShopState]]:
    """A running shop admin API stand-in; yields its URL and its state (for assertions)."""
    state = ShopState(token)
    with serving(state, _Handler) as url:
        yield url, state
