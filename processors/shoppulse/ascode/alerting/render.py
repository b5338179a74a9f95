"""``shoppulse alerts render``: the alerting files as Grafana should load them in this environment.

Grafana refuses to start when a provisioned contact point lacks its required setting, so a
receiver whose secret is not configured must not be provisioned at all: without
PAGERDUTY_ROUTING_KEY the PagerDuty contact point and the routes to it are left out (so is the
actions processor's webhook without SHOPPULSE_ACTIONS_WEBHOOK_SECRET); Slack is
provisioned as a bot (SLACK_BOT_TOKEN + SLACK_CHANNEL) or an incoming webhook (SLACK_WEBHOOK_URL),
and without either, alerts go to Grafana's built-in default contact point. Secrets stay ``${VAR}``
references that Grafana interpolates itself: nothing secret is ever written to the output."""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shoppulse.ascode.alerting.files import alerting_paths

SLACK, PAGERDUTY, ACTIONS = "slack-oncall", "pagerduty-oncall", "shoppulse-actions"
FALLBACK_RECEIVER = "grafana-default-email"  # exists in every Grafana organisation


class RenderError(ValueError):
    """The environment asks for something the files cannot be rendered for."""


@dataclass
class Rendered:
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def slack_settings(settings: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any] | None:
    """The Slack receiver's settings for the configured mode, or None when Slack is not configured."""
    chosen = dict(settings)
    if env.get("SLACK_BOT_TOKEN"):
        if not env.get("SLACK_CHANNEL"):
            raise RenderError("SLACK_BOT_TOKEN is set but SLACK_CHANNEL is not: a bot posts to a channel "
                              "(set SLACK_CHANNEL, e.g. #shop-oncall)")
        chosen.pop("url", None)
        return chosen
    if env.get("SLACK_WEBHOOK_URL"):
        chosen.pop("token", None)
        if not env.get("SLACK_CHANNEL"):
            chosen.pop("recipient", None)  # the webhook's own channel
        return chosen
    return None


def _without_receivers(route: dict[str, Any], gone: set[str]) -> dict[str, Any]:
    """The policy tree without the receivers left out: a route that only copies alerts to one
    (``continue: true``) is dropped; any other route keeps its matching, grouping and muting and
    falls back to Grafana's default contact point."""
    kept = dict(route)
    if kept.get("receiver") in gone:
        kept["receiver"] = FALLBACK_RECEIVER
    routes = [_without_receivers(r, gone) for r in route.get("routes") or []
              if not (r.get("receiver") in gone and r.get("continue"))]
    if routes:
        kept["routes"] = routes
    else:
        kept.pop("routes", None)
    return kept


def render(out: Path, env: Mapping[str, str] | None = None, source: Path | None = None) -> Rendered:
    env = os.environ if env is None else env
    result = Rendered()
    gone: set[str] = set()
    originals = {path: yaml.safe_load(path.read_text()) or {} for path in alerting_paths(source)}
    documents: dict[Path, dict[str, Any]] = {path: copy.deepcopy(doc) for path, doc in originals.items()}
    for document in documents.values():
        points = []
        for point in document.get("contactPoints") or []:
            if point.get("name") == PAGERDUTY and not env.get("PAGERDUTY_ROUTING_KEY"):
                gone.add(PAGERDUTY)
                result.notes.append("PagerDuty left out: PAGERDUTY_ROUTING_KEY is not set")
                continue
            if point.get("name") == ACTIONS and not env.get("SHOPPULSE_ACTIONS_WEBHOOK_SECRET"):
                gone.add(ACTIONS)
                result.notes.append("the actions processor's webhook left out: SHOPPULSE_ACTIONS_WEBHOOK_SECRET is "
                                    "not set (the processor still acts on the incidents table)")
                continue
            if point.get("name") == ACTIONS and not env.get("SHOPPULSE_ACTIONS_WEBHOOK_URL"):
                raise RenderError("SHOPPULSE_ACTIONS_WEBHOOK_SECRET is set but SHOPPULSE_ACTIONS_WEBHOOK_URL is not: "
                                  "set it to where Grafana reaches `shoppulse actions run`, e.g. "
                                  "http://actions:9469/grafana/webhook")
            kept = point
            if point.get("name") == SLACK:
                receivers = []
                for receiver in point.get("receivers") or []:
                    settings = slack_settings(receiver.get("settings") or {}, env)
                    if settings is not None:
                        receivers.append({**receiver, "settings": settings})
                if not receivers:
                    gone.add(SLACK)
                    result.notes.append("Slack left out: set SLACK_WEBHOOK_URL, or SLACK_BOT_TOKEN and SLACK_CHANNEL; "
                                        f"alerts go to Grafana's {FALLBACK_RECEIVER} meanwhile")
                    continue
                kept = {**point, "receivers": receivers}
            points.append(kept)
        if "contactPoints" in document:
            document["contactPoints"] = points
    if not env.get("SHOPPULSE_RUNBOOK_BASE_URL"):
        result.notes.append("SHOPPULSE_RUNBOOK_BASE_URL is not set: alert messages will link runbooks relative to "
                            "nothing (set it to where your Git host shows alerting/runbooks)")
    out.mkdir(parents=True, exist_ok=True)
    for stale in alerting_paths(out):
        stale.unlink()
    for path, document in documents.items():
        if "policies" in document and gone:
            document["policies"] = [_without_receivers(p, gone) for p in document["policies"]]
        if "contactPoints" in document and not document["contactPoints"] and set(document) <= {"apiVersion",
                                                                                              "contactPoints"}:
            continue  # nothing left to provision in this file
        target = out / path.name
        if document == originals[path]:
            shutil.copyfile(path, target)  # unchanged: keep the reviewed file as it is, comments included
        else:
            target.write_text(f"# Rendered by `shoppulse alerts render` from alerting/{path.name}.\n"
                              + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120))
        result.files.append(target)
    return result
