"""From an incident to what each policy would do about it, guardrails first.

``decide`` is a pure function of the policies, the incident as the sidecar stored it, the moment,
the actions already on record and the kill switch: the processor calls it on every incident
update, and a dry run over a replay calls it the same way. A policy *triggers* on an open incident
of one of its kinds in one of its countries, at or above its severity and its confidence (the
strongest anomaly's detector score), having moved one of its metrics when it names some, open for
its minimum duration, with the contributor it acts on carrying at least its share (a failover acts on a
gateway that carries the outage, never on one failing like the others). A triggered policy is then
*proposed* — or *refused*, with the reason, when a guardrail stops it: a kill switch, the blast
radius (the incident spans more countries than one action may touch), the rate limits (per hour,
per country per hour, counting every proposal on record), or a conflicting action still in force
in the country. Either way the decision is audited.

Each action has an idempotency key derived from the policy, the incident and the country: an
incident updated a hundred times proposes its action once, a duplicate trigger (the sidecar's
update and Grafana's webhook for the same incident) finds the key on record, and the shop's admin
API receives the same key on every retry.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from shoppulse.actions.policy import SEVERITY_RANK, Call, Policy

NAMESPACE = uuid.UUID("5a0f3c7e-2b1d-4e8a-9c6f-7d3e1b2a4c5d")
STORE_WIDE = "ALL"
HOUR = timedelta(hours=1)
# Steps that keep an action in force in its country until it is rolled back (conflicts look at these).
IN_FORCE = frozenset({"proposed", "approval_requested", "approved", "executed"})
ENDED = frozenset({"refused", "rejected", "expired", "failed", "rolled_back"})


@dataclass(frozen=True)
class Contributor:
    dimension: str
    value: str
    share: float


@dataclass(frozen=True)
class IncidentFacts:
    """What a policy triggers on: the incident's latest version in the ``incidents`` table."""

    incident_id: uuid.UUID
    kind: str
    countries: tuple[str, ...]
    severity: str
    opened_at: datetime
    resolved_at: datetime | None
    contributors: tuple[Contributor, ...] = ()
    story: str = ""
    metrics: tuple[str, ...] = ()  # what moved (the sidecar's metric names)
    confidence: float = 0.0  # how unusual its strongest anomaly was for its series, as a probability


@dataclass(frozen=True)
class PastAction:
    """An action on record (the audit table's latest step of each action)."""

    action_id: uuid.UUID
    policy: str
    country: str
    step: str
    at: datetime  # when it was proposed


@dataclass(frozen=True)
class Decision:
    action_id: uuid.UUID  # the idempotency key
    policy: Policy
    incident: IncidentFacts
    country: str
    contributor: Contributor | None
    at: datetime
    outcome: Literal["proposed", "refused"]
    reason: str  # why it triggered, or what refused it
    request: dict[str, Any]  # the rendered action
    rollback: dict[str, Any]  # the rendered rollback

    @property
    def needs_approval(self) -> bool:
        return self.policy.approval is not None and self.policy.approval.required


def action_id(policy: Policy, incident_id: uuid.UUID, country: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{policy.name}/{incident_id}/{country}")


def _render(value: Any, fields: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**fields)
    if isinstance(value, dict):
        return {k: _render(v, fields) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, fields) for v in value]
    return value


def render(call: Call | None, fields: dict[str, str]) -> dict[str, Any]:
    """The call with the incident's fields filled in (the policy's placeholders, checked at load)."""
    if call is None:
        return {}
    if call.http is not None:
        return {"http": {"method": call.http.method, "path": _render(call.http.path, fields),
                         "body": _render(call.http.body, fields)}}
    assert call.kafka is not None
    return {"kafka": {"topic": call.kafka.topic, "key": _render(call.kafka.key, fields),
                      "message": _render(call.kafka.message, fields)}}


def _acted_on(policy: Policy, incident: IncidentFacts) -> Contributor | Literal[False] | None:
    """The contributor the policy acts on (None if it acts on none); False when the incident has none
    that carries enough of it."""
    wanted = policy.trigger.contributor
    if wanted is None:
        return None
    return next((c for c in incident.contributors if c.dimension == wanted.dimension
                 and c.share >= wanted.min_share and (wanted.values is None or c.value in wanted.values)), False)


def _countries(policy: Policy, incident: IncidentFacts) -> list[str]:
    """The incident's countries the policy acts in (the store-wide series is none)."""
    return [c for c in incident.countries if c != STORE_WIDE
            and (policy.trigger.countries is None or c in policy.trigger.countries)]


def _guardrail(policy: Policy, incident: IncidentFacts, country: str, at: datetime, history: Sequence[PastAction],
               policies: dict[str, Policy], kill_switch: bool) -> str | None:
    """What refuses the action, or None."""
    if kill_switch:
        return "refused by the global kill switch (SHOPPULSE_ACTIONS_KILL_SWITCH)"
    if not policy.enabled:
        return f"refused by the policy's kill switch (enabled: false in {policy.name})"
    assert policy.limits is not None
    countries = _countries(policy, incident)
    if len(countries) > policy.limits.max_countries:
        return (f"refused: the incident spans {len(countries)} countries, more than the "
                f"{policy.limits.max_countries} one action may touch (limits.max_countries)")
    recent = [a for a in history if a.policy == policy.name and at - HOUR < a.at <= at and a.step != "refused"]
    if len(recent) >= policy.per_hour:
        return f"refused: rate limit, {len(recent)} action(s) of {policy.name} in the last hour (limits.per_hour)"
    here = [a for a in recent if a.country == country]
    if len(here) >= policy.limits.per_country_per_hour:
        return (f"refused: rate limit, {len(here)} action(s) of {policy.name} in {country} in the last hour "
                "(limits.per_country_per_hour)")
    for other in history:
        if other.policy == policy.name or other.country != country or other.step not in IN_FORCE:
            continue
        theirs = policies.get(other.policy)
        if other.policy in policy.conflicts_with or (theirs is not None and policy.name in theirs.conflicts_with):
            return (f"refused: {other.policy} is in force in {country} (action {other.action_id}) and the two "
                    "conflict (conflicts_with)")
    return None


def decide(policies: Sequence[Policy], incident: IncidentFacts, at: datetime, history: Sequence[PastAction],
           kill_switch: bool = False) -> list[Decision]:
    """What each policy does about ``incident`` at ``at``: a proposal or a refusal per country, for the
    policies it triggers whose action is not on record yet (``history``)."""
    if incident.resolved_at is not None and incident.resolved_at <= at:
        return []
    on_record = {a.action_id for a in history}
    by_name = {p.name: p for p in policies}
    decisions: list[Decision] = []
    for policy in policies:
        trigger = policy.trigger
        if incident.kind not in trigger.incident_kinds:
            continue
        if SEVERITY_RANK.get(incident.severity, -1) < SEVERITY_RANK[trigger.min_severity]:
            continue
        if trigger.metrics is not None and not set(trigger.metrics) & set(incident.metrics):
            continue
        if incident.confidence < trigger.min_confidence:
            continue
        if at - incident.opened_at < policy.min_duration:
            continue
        contributor = _acted_on(policy, incident)
        if contributor is False:
            continue
        for country in _countries(policy, incident):
            key = action_id(policy, incident.incident_id, country)
            if key in on_record:
                continue
            fields = {"country": country, "contributor": contributor.value if contributor else "",
                      "incident_id": str(incident.incident_id), "kind": incident.kind, "idempotency_key": str(key)}
            refused = _guardrail(policy, incident, country, at, history, by_name, kill_switch)
            why = refused or (f"{incident.kind} in {country}, {incident.severity}, open since "
                              f"{incident.opened_at:%H:%M} UTC"
                              + (f"; {contributor.dimension} {contributor.value} carries "
                                 f"{100 * contributor.share:.0f} %" if contributor else ""))
            decision = Decision(key, policy, incident, country, contributor or None, at,
                                "refused" if refused else "proposed", why, render(policy.action, fields),
                                render(policy.rollback, fields))
            decisions.append(decision)
            history = [*history, PastAction(key, policy.name, country, decision.outcome, at)]
    return decisions
