-- metrics_now: the store metrics up to this second for dashboards — final seconds from metrics_1s, newer ones from metrics_live.
-- A second is final once every country's freshness watermark has passed it; before that its live partial sums stand in.
-- Each second is read from exactly one table, so sum() ... GROUP BY over this view never counts an event twice.
CREATE VIEW IF NOT EXISTS metrics_now AS
WITH (SELECT min(watermark) FROM freshness WHERE source = 'metrics_1s') AS final_until
SELECT ts, country, product_views, cart_adds, cart_removes, checkouts, payment_attempts, payment_failures,
       orders, items, revenue
FROM metrics_1s
WHERE ts < final_until
UNION ALL
SELECT ts, country, product_views, cart_adds, cart_removes, checkouts, payment_attempts, payment_failures,
       orders, items, revenue
FROM metrics_live
WHERE ts >= final_until OR final_until IS NULL;
