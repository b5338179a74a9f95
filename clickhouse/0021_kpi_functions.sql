-- The store's ratio KPIs, each defined once (as latency_quantile is for latency percentiles): the dashboards and the alert rules compute them with these functions from the sums they read, so a tile and the rule beside it cannot disagree; NULL where nothing was counted.
CREATE FUNCTION IF NOT EXISTS conversion_rate AS (converted_sessions, sessions) -> converted_sessions / nullIf(sessions, 0);
CREATE FUNCTION IF NOT EXISTS abandonment_rate AS (abandoned_sessions, sessions_with_cart) -> abandoned_sessions / nullIf(sessions_with_cart, 0);
CREATE FUNCTION IF NOT EXISTS average_order_value AS (revenue, orders) -> revenue / nullIf(orders, 0);
CREATE FUNCTION IF NOT EXISTS failure_rate AS (failures, attempts) -> failures / nullIf(attempts, 0);
