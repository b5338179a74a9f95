-- insights.incident_id: the sidecar writes one insight per incident (the same insight_id, replaced as the incident grows); the high-severity anomaly rule finds an anomaly's insight through its incident.
ALTER TABLE insights ADD COLUMN IF NOT EXISTS incident_id Nullable(UUID);
