-- actions: each automated action as it stands, from its steps in action_audit: when it was proposed and last moved, its policy, incident, country and mode, its latest step (steps of one moment in the order they happen), who answered its approval, why it was proposed or refused, and the call it makes. The one definition of an action's state: the guardrails (rate limits, conflicts) and the Actions panel read it.
CREATE VIEW IF NOT EXISTS actions AS
SELECT
    action_id,
    min(at) AS proposed_at,
    max(at) AS updated_at,
    any(policy) AS policy,
    any(incident_id) AS incident_id,
    any(country) AS country,
    any(mode) AS mode,
    argMax(step, (at, indexOf(['proposed', 'refused', 'approval_requested', 'approved', 'rejected', 'expired', 'executed', 'failed', 'rolled_back'], step))) AS state,
    argMaxIf(actor, at, step IN ('approved', 'rejected')) AS answered_by,
    argMinIf(detail, at, step IN ('proposed', 'refused')) AS reason,
    argMinIf(request, at, step IN ('proposed', 'refused')) AS request
FROM action_audit
GROUP BY action_id;
