"""The one place where shoppulse creates its ClickHouse client (clickhouse-connect over HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime

from clickhouse_connect import get_client
from clickhouse_connect.driver.client import Client

from shoppulse.settings import Settings

CONNECT_TIMEOUT_S = 5
SEND_RECEIVE_TIMEOUT_S = 300


def connect(settings: Settings, database: str | None = None, **client_settings: object) -> Client:
    """A clickhouse-connect client for ``settings.clickhouse_http_url``.

    ``database`` defaults to the shoppulse database; pass ``"default"`` before it exists.
    No HTTP session is used, so one client may serve several threads (clickhouse-connect
    sessions would make concurrent queries fail with SESSION_IS_LOCKED)."""
    return get_client(
        dsn=settings.clickhouse_http_url,
        username=settings.clickhouse_user,
        password=settings.clickhouse_password,
        database=database or settings.clickhouse_database,
        autogenerate_session_id=False,
        connect_timeout=CONNECT_TIMEOUT_S,
        send_receive_timeout=SEND_RECEIVE_TIMEOUT_S,
        settings=client_settings or None,
    )


def as_utc(moment: datetime) -> datetime:
    """A DateTime64(…, 'UTC') value as clickhouse-connect hands it back (naive) marked as the UTC it is."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
