-- The PostgreSQL twin of ../sqlite/0011_subscription_addons.sql (same tables, columns and indexes; see README.md).
-- Subscription add-ons: an add-on bought for a subscription. The row keeps the whole add-on
-- (the add-on version it came from, its rate cards as bought, its quantity timeline) as JSON
-- in `definition`; the columns are what lookups and the one-purchase-per-add-on check need.
CREATE TABLE subscription_addons (
    id               TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace        TEXT COLLATE "C" NOT NULL,
    subscription_id  TEXT COLLATE "C" NOT NULL,
    addon_id         TEXT COLLATE "C" NOT NULL,
    definition       TEXT COLLATE "C" NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE UNIQUE INDEX subscription_addons_addon ON subscription_addons (namespace, subscription_id, addon_id);
