"""A small client for the parts of Grafana's HTTP API shoppulse uses (dashboards, folders, search).

Authentication is a service-account token from the environment (``GRAFANA_TOKEN``), sent as a
Bearer token and never logged. Every response is checked before it is used: a non-JSON body, an
unexpected shape or an error status becomes a ``GrafanaError`` that says what happened and what to do.
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from shoppulse.redact import redact_url

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0


class GrafanaError(RuntimeError):
    """Grafana refused a request or answered something unusable."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class GrafanaClient:
    def __init__(self, url: str, token: str | None, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._session = requests.Session()
        self._session.headers.update({"Accept": "application/json"})
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout_s

    def close(self) -> None:
        self._session.close()

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                expect: type = dict) -> Any:
        """One API call; returns the decoded JSON body, which must be of type ``expect``."""
        try:
            response = self._session.request(method, f"{self.url}{path}", json=json, params=params,
                                             timeout=self._timeout)
        except requests.RequestException as exc:
            raise GrafanaError(f"Grafana at {redact_url(self.url)} is unreachable ({type(exc).__name__}): "
                               "check GRAFANA_URL and that Grafana is running") from None
        try:
            body = response.json()
        except ValueError:
            raise GrafanaError(f"{method} {path}: Grafana answered HTTP {response.status_code} with a non-JSON "
                               f"body ({response.text[:120]!r})", response.status_code) from None
        if response.status_code >= 400:
            message = body.get("message", "") if isinstance(body, dict) else ""
            reason = body.get("status") if isinstance(body, dict) else None
            hint = {401: "set GRAFANA_TOKEN to a valid service-account token",
                    403: "the service account lacks the permission (dashboards:write / folders:create)"}.get(
                        response.status_code, "")
            raise GrafanaError(f"{method} {path}: HTTP {response.status_code} {message}"
                               + (f" — {hint}" if hint else ""), response.status_code, reason)
        if not isinstance(body, expect):
            raise GrafanaError(f"{method} {path}: expected a JSON {expect.__name__}, got {type(body).__name__}")
        return body

    def search_dashboards(self, folder_uid: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"type": "dash-db", "limit": 5000}
        if folder_uid:
            params["folderUIDs"] = folder_uid
        hits = self.request("GET", "/api/search", params=params, expect=list)
        return [hit for hit in hits if isinstance(hit, dict) and isinstance(hit.get("uid"), str)]

    def get_dashboard(self, uid: str) -> dict[str, Any] | None:
        """``{"dashboard": ..., "meta": ...}`` or None when Grafana has no dashboard with this uid."""
        try:
            found = self.request("GET", f"/api/dashboards/uid/{uid}")
        except GrafanaError as exc:
            if exc.status == 404:
                return None
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
        """Annotations carrying every tag in ``tags`` (Grafana's matchAny=false)."""
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
