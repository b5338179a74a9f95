"""What Grafana's Alertmanager would have sent for a replay's firings: the notification policy tree
routes each alert (its labels as Grafana builds them), groups it by the route's ``group_by`` and
notifies after ``group_wait``, then every ``group_interval`` while the group changes, and every
``repeat_interval`` while it keeps firing — the rules of Alertmanager's dispatcher and its dedup
stage (``dispatch/route.go``, ``dispatch/dispatch.go``, ``notify/notify.go``), which Grafana's
alerting embeds. A route's mute timings hold its notifications back while they last, and its active
timings let them out only while they last (``mute.py``; the notification is sent at the first flush
outside them, as Alertmanager's time-mute stage leaves it unsent and unlogged)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from shoppulse.ascode.alerting.expressions import Labels
from shoppulse.ascode.alerting.files import AlertingFiles, parse_duration
from shoppulse.ascode.alerting.mute import TimeInterval, mute_timings, muted
from shoppulse.ascode.alerting.replay import Firing, RuleReplay, offset

# Grafana's defaults for its root policy (pkg/services/ngalert/notifier/... default configuration).
DEFAULT_GROUP_BY = ("grafana_folder", "alertname")
DEFAULT_GROUP_WAIT = timedelta(seconds=30)
DEFAULT_GROUP_INTERVAL = timedelta(minutes=5)
DEFAULT_REPEAT_INTERVAL = timedelta(hours=4)
ALL_LABELS = "..."  # group_by: ['...'] groups by every label
GroupKey = tuple[str, tuple[tuple[str, str], ...]]  # the route's place in the tree, the group_by labels' values


@dataclass(frozen=True)
class Route:
    receiver: str
    matchers: tuple[tuple[str, str, str], ...]
    group_by: tuple[str, ...]
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta
    keep_going: bool  # ``continue``
    routes: tuple[Route, ...]
    path: str  # where in the tree, for the group key
    mute: tuple[TimeInterval, ...] = ()  # its own mute_time_intervals (not inherited, as in Alertmanager)
    active: tuple[TimeInterval, ...] = ()  # its own active_time_intervals: notify only within them

    def silent_at(self, moment: datetime) -> bool:
        return muted(self.mute, moment) or (bool(self.active) and not muted(self.active, moment))

    def matches(self, labels: dict[str, str]) -> bool:
        return all(_matcher_holds(labels.get(name, ""), op, value) for name, op, value in self.matchers)

    def match(self, labels: dict[str, str]) -> list[Route]:
        """The routes an alert goes to: the deepest matching ones, as Alertmanager walks the tree."""
        if not self.matches(labels):
            return []
        found: list[Route] = []
        for child in self.routes:
            matched = child.match(labels)
            found += matched
            if matched and not child.keep_going:
                break
        return found or [self]

    def group_key(self, labels: dict[str, str]) -> GroupKey:
        names = sorted(labels) if ALL_LABELS in self.group_by else sorted(self.group_by)
        return self.path, tuple((name, labels.get(name, "")) for name in names)


def _matcher_holds(actual: str, op: str, value: str) -> bool:
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    anchored = re.fullmatch(value, actual) is not None  # Alertmanager anchors regex matchers
    return anchored if op == "=~" else not anchored


def _route(item: dict[str, Any], parent: Route | None, path: str,
           timings: dict[str, tuple[TimeInterval, ...]]) -> Route:
    def timer(key: str, inherited: timedelta | None, default: timedelta) -> timedelta:
        return parse_duration(item.get(key)) or inherited or default

    def intervals(key: str) -> tuple[TimeInterval, ...]:
        return tuple(i for name in item.get(key) or [] for i in timings.get(str(name), ()))

    group_by = tuple(item["group_by"]) if item.get("group_by") else (parent.group_by if parent else DEFAULT_GROUP_BY)
    shell = Route(
        receiver=str(item.get("receiver") or (parent.receiver if parent else "")),
        matchers=tuple((str(n), str(o), str(v)) for n, o, v in item.get("object_matchers") or []),
        group_by=group_by,
        group_wait=timer("group_wait", parent.group_wait if parent else None, DEFAULT_GROUP_WAIT),
        group_interval=timer("group_interval", parent.group_interval if parent else None, DEFAULT_GROUP_INTERVAL),
        repeat_interval=timer("repeat_interval", parent.repeat_interval if parent else None, DEFAULT_REPEAT_INTERVAL),
        keep_going=bool(item.get("continue")), routes=(), path=path,
        mute=intervals("mute_time_intervals"), active=intervals("active_time_intervals"))
    children = tuple(_route(child, shell, f"{path}/{i}", timings)
                     for i, child in enumerate(item.get("routes") or []) if isinstance(child, dict))
    return replace(shell, routes=children)


def policy_tree(files: AlertingFiles) -> Route | None:
    """The provisioned root policy (the first tree; lint reports a second); None when none is provisioned."""
    timings = mute_timings(m.item for m in files.items("muteTimes"))
    for policy in files.items("policies"):
        return _route(policy.item, None, "root", timings)
    return None


@dataclass(frozen=True)
class Alert:
    """One firing of one alert instance, with the labels Grafana sends to its Alertmanager."""

    labels: Labels
    starts_at: datetime
    ends_at: datetime | None

    def firing_at(self, at: datetime) -> bool:
        return self.starts_at <= at and (self.ends_at is None or self.ends_at > at)


def alert_labels(rule: dict[str, Any], folder: str, firing: Firing) -> Labels:
    """Grafana's order of precedence: its own labels, then the rule's, then the query's
    (``state/cache.go``: a query label that a rule label already sets is dropped)."""
    labels = {"alertname": str(rule.get("title")), "grafana_folder": folder}
    for name, value in (rule.get("labels") or {}).items():
        labels.setdefault(str(name), str(value))
    for name, value in firing.labels:
        labels.setdefault(name, value)
    return frozenset(labels.items())


@dataclass
class Notification:
    receiver: str
    group: GroupKey
    at: datetime
    firing: frozenset[Labels]
    resolved: frozenset[Labels]

    @property
    def group_labels(self) -> dict[str, str]:
        return dict(self.group[1])


@dataclass
class _Sent:
    """The notification log's entry of a group: what its last notification said (it outlives the group)."""

    firing: frozenset[Labels]
    resolved: frozenset[Labels]
    at: datetime


@dataclass
class _Group:
    route: Route
    key: GroupKey
    next_flush: datetime
    alerts: dict[Labels, Alert] = field(default_factory=dict)


def dispatch(tree: Route, alerts: list[Alert], until: datetime,
             no_resolved: frozenset[str] = frozenset()) -> list[Notification]:
    """Every notification the policy tree sends for ``alerts`` up to ``until``, in time order;
    ``no_resolved``: the contact points that send no resolved messages (``disableResolveMessage``)."""
    groups: dict[GroupKey, _Group] = {}
    log: dict[GroupKey, _Sent] = {}
    sent: list[Notification] = []

    def flush(group: _Group) -> None:
        at = group.next_flush
        firing = frozenset(k for k, a in group.alerts.items() if a.firing_at(at))
        resolved = frozenset(group.alerts) - firing
        if not group.route.silent_at(at) and _needs_update(log.get(group.key), firing, resolved, at,
                                                            group.route.repeat_interval,
                                                            group.route.receiver not in no_resolved):
            sent.append(Notification(group.route.receiver, group.key, at, firing, resolved))
            log[group.key] = _Sent(firing, resolved, at)
        for labels in resolved:  # a resolved alert leaves its group once it was flushed
            del group.alerts[labels]
        if group.alerts:
            group.next_flush = at + group.route.group_interval
        else:
            del groups[group.key]

    def flush_until(moment: datetime) -> None:
        while due := [g for g in groups.values() if g.next_flush <= moment]:
            flush(min(due, key=lambda g: g.next_flush))

    for alert in sorted(alerts, key=lambda a: a.starts_at):
        if alert.starts_at > until:
            break
        flush_until(alert.starts_at)
        labels = dict(alert.labels)
        for route in tree.match(labels):
            key = route.group_key(labels)
            group = groups.get(key) or groups.setdefault(key, _Group(route, key, alert.starts_at + route.group_wait))
            group.alerts[alert.labels] = alert
    flush_until(until)
    return sent


def _needs_update(last: _Sent | None, firing: frozenset[Labels], resolved: frozenset[Labels], at: datetime,
                  repeat: timedelta, send_resolved: bool) -> bool:
    """Alertmanager's dedup stage: notify on new firing alerts, on resolutions, and on the repeat interval."""
    if last is None:
        return bool(firing)
    if not firing <= last.firing:
        return True
    if not firing:
        return bool(last.firing)
    if send_resolved and not resolved <= last.resolved:
        return True
    return at - last.at > repeat  # the entry must be strictly older than the interval


def without_resolved_messages(files: AlertingFiles) -> frozenset[str]:
    """The contact points none of whose integrations sends resolved messages."""
    sends: dict[str, bool] = {}
    for receiver in files.receivers():
        name = str(receiver.parent.get("name"))
        sends[name] = sends.get(name, False) or not receiver.item.get("disableResolveMessage", False)
    return frozenset(name for name, told in sends.items() if not told)


def replay_alerts(files: AlertingFiles, results: list[RuleReplay]) -> list[Alert]:
    """The replay's firings as the alerts Grafana would send, with their full label sets."""
    by_uid = {str(located.item.get("uid")): located for located in files.rules()}
    alerts = []
    for result in results:
        located = by_uid.get(result.uid)
        if located is None:
            continue
        folder = str(located.parent.get("folder", ""))
        for firing in result.firings:
            alerts.append(Alert(alert_labels(located.item, folder, firing), firing.fired_at, firing.resolved_at))
    return alerts


@dataclass
class GroupReport:
    receiver: str
    labels: dict[str, str]  # the group's group_by labels
    notifications: list[Notification]

    @property
    def incident(self) -> dict[str, str]:
        """The incident the group is about: its id, kind and countries (from the incident rule's alert)."""
        alerts = [dict(a) for n in self.notifications for a in n.firing | n.resolved]
        told = next((a for a in alerts if a.get("kind")), {})
        return {"incident_id": self.labels.get("incident_id", ""), "kind": told.get("kind", ""),
                "countries": told.get("countries", "")}


def groups_of(notifications: list[Notification]) -> list[GroupReport]:
    """The notifications per receiver and group, in the order the groups first notified."""
    found: dict[tuple[str, Any], GroupReport] = {}
    for notification in notifications:
        key = (notification.receiver, notification.group)
        report = found.setdefault(key, GroupReport(notification.receiver, notification.group_labels, []))
        report.notifications.append(notification)
    return list(found.values())


def notification_lines(notifications: list[Notification], origin: datetime) -> list[str]:
    """Per receiver and group, how many notifications it sent and when; incidents first, by id."""
    groups = groups_of(notifications)
    receivers = sorted({g.receiver for g in groups})
    lines = [f"Notifications as the policy tree sends them: {len(notifications)} in {len(groups)} group(s)"
             + (f" to {', '.join(receivers)}" if receivers else "")]
    for group in sorted(groups, key=lambda g: (not g.labels.get("incident_id"), g.notifications[0].at)):
        incident = group.incident
        if incident["incident_id"]:
            what = (f"incident {incident['incident_id'][:8]}"
                    + (f" ({incident['kind']} in {incident['countries']})" if incident["kind"] else ""))
        else:
            what = ", ".join(f"{k}={v}" for k, v in sorted(group.labels.items())) or "(one group)"
        times = ", ".join(offset(n.at, origin) for n in group.notifications[:6])
        more = "…" if len(group.notifications) > 6 else ""
        lines.append(f"  {group.receiver} · {what}: {len(group.notifications)} notification(s) at {times}{more}")
    return lines

