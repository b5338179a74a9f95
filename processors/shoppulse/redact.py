"""Secrets kept out of what shoppulse prints and logs: passwords inside URLs, and the values of
the secret settings wherever they appear in a message (an exception's text may quote a URL or a
request it was given)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"
SECRET_VARIABLES = ("CLICKHOUSE_PASSWORD", "CLICKHOUSE_GRAFANA_PASSWORD", "GRAFANA_TOKEN", "OPENAI_API_KEY",
                    "SHOPPULSE_PII_KEY", "SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN", "PAGERDUTY_ROUTING_KEY",
                    "SHOPPULSE_SHOP_ADMIN_TOKEN", "SHOPPULSE_ACTIONS_WEBHOOK_SECRET",
                    "SHOPPULSE_ACTIONS_WEBHOOK_PASSWORD", "SLACK_SIGNING_SECRET", "SHOPPULSE_ACTIONS_LINK_SECRET")
URL_VARIABLES = ("CLICKHOUSE_URL", "GRAFANA_URL", "OPENAI_BASE_URL", "SHOPPULSE_SHOP_ADMIN_URL",
                 "SHOPPULSE_ACTIONS_PUBLIC_URL", "SHOPPULSE_SLACK_API_URL", "SHOPPULSE_ACTIONS_WEBHOOK_URL")
_URL_WITH_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^/\s@]+)@")


def redact_url(url: str) -> str:
    """``url`` with its password (and a token given as the user name) replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None and not parts.username:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username if parts.password is not None else HIDDEN
    return urlunsplit(parts._replace(netloc=f"{user}:{HIDDEN}@{host}" if parts.password is not None
                                     else f"{user}@{host}"))


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every secret value, and the credentials of every URL in it, replaced by ***."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return _URL_WITH_USERINFO.sub(lambda m: f"{m.group(1)}{HIDDEN}@", text)


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The secret values of the environment: its secret variables, and the credentials of its URLs."""
    environ = os.environ if environ is None else environ
    values = [environ.get(name) for name in SECRET_VARIABLES]
    for name in URL_VARIABLES:
        parts = urlsplit(environ.get(name, ""))
        with contextlib.suppress(ValueError):
            values.append(parts.password)
    return [value for value in values if value]
