-- The per-second tables (metrics_1s, payment_latency_1s, segment_metrics_1s) keep 15 days, as the raw and clean topics do: the two weeks of history `shoppulse backtest` replays, and a day for a backfill of them to be read.
ALTER TABLE metrics_1s MODIFY TTL ts + INTERVAL 15 DAY;
ALTER TABLE payment_latency_1s MODIFY TTL ts + INTERVAL 15 DAY;
ALTER TABLE segment_metrics_1s MODIFY TTL ts + INTERVAL 15 DAY;
