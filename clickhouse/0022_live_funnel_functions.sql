-- The live funnel ratios the anomaly sidecar watches, each defined once: flows of one window of metrics_1s (orders per product view, the share of carts added not matched by an order, checkouts per cart added), timely where the session-based conversion_rate and abandonment_rate of the tiles and rules wait for sessions to close; NULL where nothing was counted.
CREATE FUNCTION IF NOT EXISTS orders_per_view AS (orders, product_views) -> orders / nullIf(product_views, 0);
CREATE FUNCTION IF NOT EXISTS carts_without_order AS (orders, cart_adds) -> greatest(0, 1 - orders / nullIf(cart_adds, 0));
CREATE FUNCTION IF NOT EXISTS checkouts_per_cart AS (checkouts, cart_adds) -> least(1, checkouts / nullIf(cart_adds, 0));
