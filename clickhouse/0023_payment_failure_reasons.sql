-- payment_latency_1s.failure_reasons / reason_counts: a gateway's failed payments of the second by their reason (declined, gateway_error…), so an incident's contributors can name the reason behind its extra failures. Rows written before have none (empty arrays).
ALTER TABLE payment_latency_1s ADD COLUMN IF NOT EXISTS failure_reasons Array(LowCardinality(String)) AFTER bucket_counts;
ALTER TABLE payment_latency_1s ADD COLUMN IF NOT EXISTS reason_counts Array(UInt32) AFTER failure_reasons;
