-- metrics_live is written by ingestion from now on (one Kafka hop earlier), fenced by offsets of the raw topic instead of the clean one.
-- Rows fenced by the old offsets would hide or let through the new ones, so the provisional sums start afresh: seconds already
-- final are read from metrics_1s (view metrics_now); a second still open during the upgrade shows only the events ingested
-- after it until its window closes, a few seconds later. Upgrade both processors together.
TRUNCATE TABLE IF EXISTS metrics_live;
