-- action_audit: every step of every automated action, appended and never changed: its proposal or refusal (with the reason, the call it makes and the call that rolls it back), who approved or rejected it and when, its execution (request and response), its rollback; mode says whether it ran live or as a dry run. action_id is the action's idempotency key.
CREATE TABLE IF NOT EXISTS action_audit
(
    at           DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    action_id    UUID,
    policy       LowCardinality(String),
    incident_id  UUID,
    country      LowCardinality(String),
    step         LowCardinality(String),
    mode         LowCardinality(String),
    actor        String,
    detail       String,
    request      String CODEC(ZSTD(3)),
    rollback     String CODEC(ZSTD(3)),
    response     String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (action_id, at)
TTL toDateTime(at) + INTERVAL 2 YEAR;
