-- incident_countries: each incident once per country it names (its latest version), so an alert rule about a country can carry the incident_id of the incident open there and the notification policies group its page under that incident.
CREATE VIEW IF NOT EXISTS incident_countries AS
SELECT toString(incident_id) AS incident_id, arrayJoin(countries) AS country, kind, severity, opened_at, resolved_at
FROM incidents FINAL;
