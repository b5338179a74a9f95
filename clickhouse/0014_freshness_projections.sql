-- freshness_watermark projections: the newest second per country of each table the freshness view reads, kept per data part,
-- so the watermark every metrics_now panel reads (to split final from live seconds) no longer scans a week of metrics_1s.
ALTER TABLE metrics_1s ADD PROJECTION IF NOT EXISTS freshness_watermark (SELECT country, max(ts) GROUP BY country);
ALTER TABLE payment_latency_1s ADD PROJECTION IF NOT EXISTS freshness_watermark (SELECT country, max(ts) GROUP BY country);
ALTER TABLE sessions ADD PROJECTION IF NOT EXISTS freshness_watermark (SELECT country, max(session_end) GROUP BY country);
-- Parts written before this migration get theirs in the background; until then the view reads them as before.
ALTER TABLE metrics_1s MATERIALIZE PROJECTION freshness_watermark;
ALTER TABLE payment_latency_1s MATERIALIZE PROJECTION freshness_watermark;
ALTER TABLE sessions MATERIALIZE PROJECTION freshness_watermark;
