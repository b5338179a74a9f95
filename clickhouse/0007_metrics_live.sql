-- metrics_live: provisional per-checkpoint sums of every event per country and second (metrics_1s's columns), queryable ~1 s after the event; the final figures are metrics_1s.
-- Rows are additive partial sums, written exactly once by the sink's offset fence: always read with sum() ... GROUP BY.
-- A second is final once it is at or below the freshness watermark; dashboards read live only above it (view metrics_now).
CREATE TABLE IF NOT EXISTS metrics_live AS metrics_1s
ENGINE = MergeTree
PARTITION BY toStartOfHour(ts)
ORDER BY (country, ts)
TTL ts + INTERVAL 1 DAY;
