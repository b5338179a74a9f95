"""A small client for the parts of Grafana's HTTP API shoppulse uses (dashboards, folders, search,
annotations, the caller's permissions), as Grafana 12 and 13 answer them.

Authentication is a service-account token from the environment (``GRAFANA_TOKEN``), sent as a
Bearer token; without one, credentials written into ``GRAFANA_URL`` are sent as basic auth. Neither
is ever printed: messages name Grafana by its address without credentials. Every response is
checked before it is used: a non-JSON body, an unexpected shape or an error status becomes a
``GrafanaError`` that says what happened and what to do.

Retries: a request Grafana did not take in (connection refused, 429) is retried, whatever its
method; one that may have been acted on (502/503/504, a timeout) only when repeating it changes
nothing (GET, PATCH). Waits grow exponentially and follow ``Retry-After`` when Grafana sends it.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
ATTEMPTS = 4
MAX_WAIT_S = 60.0  # a longer Retry-After is honoured only this far; the caller's own back-off does the rest
SEARCH_PAGE = 5000  # Grafana's maximum page size for /api/search (above it: 422)
NOT_TAKEN_IN = frozenset({429})  # refused before Grafana acted: safe to repeat any request
MAYBE_ACTED = frozenset({502, 503, 504})  # a proxy's or a restarting Grafana's answer: repeat idempotent ones
IDEMPOTENT = frozenset({"GET", "HEAD", "PATCH", "PUT", "DELETE"})
HINTS = {401: "set GRAFANA_TOKEN to a valid service-account token",
         403: "the service account lacks a permission this call needs (see the README's token permissions)"}


class GrafanaError(RuntimeError):
    """Grafana refused a request or answered something unusable."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class GrafanaTimeoutError(GrafanaError):
    """Grafana took longer than the timeout to answer."""


def _without_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    parts = urlsplit(url.rstrip("/"))
    if parts.username is None and parts.password is None:
        return urlunsplit(parts), None
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc)), (unquote(parts.username or ""), unquote(parts.password or ""))


def can_authenticate(url: str, token: str | None) -> bool:
    """Whether a call to ``url`` will carry credentials: a token, or a user and password in the URL."""
    return bool(token) or _without_credentials(url)[1] is not None


class GrafanaClient:
    def __init__(self, url: str, token: str | None, timeout_s: float = TIMEOUT_S, attempts: int = ATTEMPTS,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url, credentials = _without_credentials(url)
        self._session = requests.Session()
        self._session.trust_env = False  # no ~/.netrc credentials or proxies from elsewhere
        self._session.headers.update({"Accept": "application/json"})
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        elif credentials:
            self._session.auth = credentials
        self._timeout = timeout_s
        self._attempts = max(1, attempts)
        self._sleep = sleep

    def close(self) -> None:
        self._session.close()

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                expect: type = dict) -> Any:
        """One API call (retried as the module says); returns the decoded JSON body, of type ``expect``."""
        for attempt in range(1, self._attempts + 1):
            last = attempt == self._attempts
            try:
                response = self._session.request(method, f"{self.url}{path}", json=json, params=params,
                                                 timeout=self._timeout)
            except requests.ConnectionError as exc:
                # a connect failure sent nothing; a dropped connection may have: repeat only idempotent calls
                refused = isinstance(exc, requests.ConnectTimeout) or "Connection refused" in str(exc)
                if last or not (refused or method in IDEMPOTENT):
                    raise GrafanaError(f"Grafana at {self.url} is unreachable ({type(exc).__name__}): check "
                                       "GRAFANA_URL and that Grafana is running") from None
                self._wait(attempt, None, method, path, type(exc).__name__)
                continue
            except requests.Timeout:
                if last or method not in IDEMPOTENT:
                    raise GrafanaTimeoutError(f"{method} {path}: Grafana at {self.url} did not answer within "
                                              f"{self._timeout:g} s (SHOPPULSE_GRAFANA_TIMEOUT_S)") from None
                self._wait(attempt, None, method, path, "timeout")
                continue
            status = response.status_code
            if not last and (status in NOT_TAKEN_IN or (status in MAYBE_ACTED and method in IDEMPOTENT)):
                self._wait(attempt, response.headers.get("Retry-After"), method, path, f"HTTP {status}")
                continue
            return self._decoded(response, method, path, expect)
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, retry_after: str | None, method: str, path: str, why: str) -> None:
        delay = min(MAX_WAIT_S, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
        if retry_after:
            with contextlib.suppress(InvalidHeader):  # an unparseable header: keep our own back-off
                delay = min(MAX_WAIT_S, max(0.0, Retry().parse_retry_after(retry_after)))
        log.info("grafana call retried", extra={"call": f"{method} {path}", "why": why, "wait_s": round(delay, 2)})
        self._sleep(delay)

    def _decoded(self, response: requests.Response, method: str, path: str, expect: type) -> Any:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            raise GrafanaError(f"{method} {path}: Grafana answered HTTP {status} with a non-JSON body "
                               f"({response.text[:120]!r})", status) from None
        if status >= 400:
            message = str(body.get("message", "")) if isinstance(body, dict) else ""
            reason = body.get("status") if isinstance(body, dict) else None
            hint = HINTS.get(status, "")
            raise GrafanaError(f"{method} {path}: HTTP {status} {message}" + (f" — {hint}" if hint else ""),
                               status, reason if isinstance(reason, str) else None)
        if not isinstance(body, expect):
            raise GrafanaError(f"{method} {path}: expected a JSON {expect.__name__}, got {type(body).__name__}")
        return body

    def search_dashboards(self, folder_uid: str | None = None) -> list[dict[str, Any]]:
        """Every dashboard (of the folder), page after page."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            params: dict[str, Any] = {"type": "dash-db", "limit": SEARCH_PAGE, "page": page}
            if folder_uid:
                params["folderUIDs"] = folder_uid
            hits = self.request("GET", "/api/search", params=params, expect=list)
            found += [hit for hit in hits if isinstance(hit, dict) and isinstance(hit.get("uid"), str)]
            if len(hits) < SEARCH_PAGE:
                return found
            page += 1

    def get_dashboard(self, uid: str) -> dict[str, Any] | None:
        """``{"dashboard": ..., "meta": ...}`` or None when Grafana has no dashboard with this uid."""
        try:
            found = self.request("GET", f"/api/dashboards/uid/{uid}")
        except GrafanaError as exc:
            if exc.status == 404:
                return None
            if exc.status == 406:
                raise GrafanaError(f"dashboard {uid} is stored in Grafana's v2 dashboard format, which the "
                                   "dashboard API (/api/dashboards) cannot read or write: keep it out of the "
                                   "folder shoppulse manages", 406) from None
            raise
        if not isinstance(found.get("dashboard"), dict) or not isinstance(found.get("meta"), dict):
            raise GrafanaError(f"GET /api/dashboards/uid/{uid}: the answer lacks dashboard and meta objects")
        return found

    def save_dashboard(self, dashboard: dict[str, Any], folder_uid: str, message: str,
                       overwrite: bool) -> dict[str, Any]:
        return self.request("POST", "/api/dashboards/db", json={
            "dashboard": dashboard, "folderUid": folder_uid, "message": message, "overwrite": overwrite})

    def ensure_folder(self, uid: str, title: str) -> None:
        try:
            self.request("GET", f"/api/folders/{uid}")
        except GrafanaError as exc:
            if exc.status != 404:
                raise
            self.request("POST", "/api/folders", json={"uid": uid, "title": title})

    def find_annotations(self, tags: list[str], dashboard_uid: str | None = None) -> list[dict[str, Any]]:
        """Annotations carrying every tag in ``tags`` (Grafana's matchAny=false), of the dashboard or
        of the whole organisation. Grafana answers 400 when it cannot find (or let us read) the dashboard."""
        params: dict[str, Any] = {"tags": tags, "matchAny": "false", "limit": 100, "type": "annotation"}
        if dashboard_uid:
            params["dashboardUID"] = dashboard_uid
        found = self.request("GET", "/api/annotations", params=params, expect=list)
        return [a for a in found if isinstance(a, dict) and isinstance(a.get("id"), int)]

    def create_annotation(self, annotation: dict[str, Any]) -> int:
        answer = self.request("POST", "/api/annotations", json=annotation)
        if not isinstance(answer.get("id"), int):
            raise GrafanaError(f"POST /api/annotations: the answer has no numeric id ({answer!r:.120})")
        return int(answer["id"])

    def patch_annotation(self, annotation_id: int, changes: dict[str, Any]) -> None:
        self.request("PATCH", f"/api/annotations/{annotation_id}", json=changes)

    def delete_annotation(self, annotation_id: int) -> None:
        """Delete one annotation; one Grafana no longer has (404) is deleted already."""
        try:
            self.request("DELETE", f"/api/annotations/{annotation_id}")
        except GrafanaError as exc:
            if exc.status != 404:
                raise

    def permissions(self) -> dict[str, list[str]] | None:
        """The caller's permissions (action -> scopes), or None when this Grafana does not say."""
        try:
            found = self.request("GET", "/api/access-control/user/permissions")
        except GrafanaError as exc:
            if exc.status in (403, 404):
                return None
            raise
        return {str(k): [str(s) for s in v] if isinstance(v, list) else [] for k, v in found.items()}
