-- known_events: the calendar of known events (detection/calendar.yaml, its iCalendar files expanded) as the sidecar read it, one set of rows per version of the calendar (calendar_version: a digest of its events), for the wall display to mark them; calendar_loads: when the sidecar applied which version (the latest is in force: an emptied calendar is a version with no events).
CREATE TABLE IF NOT EXISTS known_events
(
    calendar_version  String,
    name              String,
    kind              LowCardinality(String),
    countries         Array(LowCardinality(String)),
    starts_at         DateTime64(3, 'UTC'),
    ends_at           DateTime64(3, 'UTC'),
    level             Nullable(Float64)
)
ENGINE = ReplacingMergeTree
ORDER BY (calendar_version, starts_at, name, kind, countries);
CREATE TABLE IF NOT EXISTS calendar_loads
(
    loaded_at         DateTime64(3, 'UTC'),
    calendar_version  String,
    events            UInt32
)
ENGINE = MergeTree
ORDER BY loaded_at
TTL toDateTime(loaded_at) + INTERVAL 2 YEAR;
-- known_events_in_force: the events of the calendar the sidecar applied last; countries empty: the whole store; level: the furthest it may take their volumes, as a multiple of the usual (NULL: not judged while it lasts).
CREATE VIEW IF NOT EXISTS known_events_in_force AS
SELECT DISTINCT name, kind, countries, starts_at, ends_at, level
FROM known_events
WHERE calendar_version = (SELECT argMax(calendar_version, loaded_at) FROM calendar_loads);
