-- Ad campaigns in segment_metrics_1s: the dimension 'campaign' counts each campaign's paid clicks and their cost (USD)
-- and the orders (and revenue) attributed to it, so spend without orders can be seen per campaign and an incident's
-- contributors can name the campaign. Device rows count the clicks too; category rows have none.
ALTER TABLE segment_metrics_1s
    ADD COLUMN IF NOT EXISTS ad_clicks UInt32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS ad_spend Decimal(18, 4) DEFAULT 0;

-- Orders per paid click, defined once for the Campaigns panel and the sidecar's orders_per_ad_click: a flow of one
-- window (the order comes minutes after its click), at most 1; NULL where no click was counted.
CREATE FUNCTION IF NOT EXISTS orders_per_ad_click AS (orders, ad_clicks) -> least(1, orders / nullIf(ad_clicks, 0));
