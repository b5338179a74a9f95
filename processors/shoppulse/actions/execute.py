"""Calls to the shop's admin API, each made once whatever happens to it on the way.

Every call carries the action's id as its ``Idempotency-Key`` (a Structured Field string, as
draft-ietf-httpapi-idempotency-key-header-07 defines it), so a retry after a lost answer, a timeout
or a restart of the processor is recognised by the shop and changes nothing twice. A refusal (4xx
other than 409 and 429) is final; no answer, a 409 (the first attempt still in progress), a 429 or a
5xx is retried with the same key, a few times with a growing pause.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import requests

RETRYABLE = frozenset({409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int | None  # None: no answer at all
    body: Any
    attempts: int
    error: str = ""

    def as_record(self) -> dict[str, Any]:
        return {"status": self.status, "body": self.body, "attempts": self.attempts, "error": self.error}


class ShopAdminClient:
    """The shop's admin API at ``base_url`` with a bearer ``token`` (from the environment; never logged)."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 10.0, attempts: int = 4,
                 pause_s: float = 0.5, session: requests.Session | None = None) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._pause_s = pause_s
        self._session = session or requests.Session()

    def send(self, request: dict[str, Any], idempotency_key: uuid.UUID) -> Outcome:
        """Make the rendered HTTP call (``{"http": {method, path, body}}``) until the shop answers it."""
        call = request["http"]
        headers = {"Authorization": f"Bearer {self._token}", "Idempotency-Key": f'"{idempotency_key}"',
                   "Accept": "application/json"}
        last = ""
        for attempt in range(1, self._attempts + 1):
            if attempt > 1:
                time.sleep(self._pause_s * 2 ** (attempt - 2))
            try:
                answer = self._session.request(call["method"], self._base + call["path"], json=call["body"],
                                               headers=headers, timeout=self._timeout_s)
            except requests.RequestException as exc:
                last = f"no answer ({type(exc).__name__})"
                continue
            try:
                body: Any = answer.json()
            except ValueError:
                body = answer.text[:500]
            if answer.status_code in RETRYABLE:
                last = f"HTTP {answer.status_code}"
                continue
            ok = 200 <= answer.status_code < 300
            return Outcome(ok, answer.status_code, body, attempt,
                           "" if ok else f"the shop refused the call: HTTP {answer.status_code}")
        return Outcome(False, None, None, self._attempts, f"{last} after {self._attempts} attempts")
