-- Refunds in segment_metrics_1s: the dimension 'refund reason' counts refunds and the amount refunded (USD) per
-- reason ('unauthorized' is a chargeback), so a wave of them shows per country and an incident's contributors can
-- name the reason. Device rows count them too.
ALTER TABLE segment_metrics_1s
    ADD COLUMN IF NOT EXISTS refunds UInt32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS refunded Decimal(18, 4) DEFAULT 0;
