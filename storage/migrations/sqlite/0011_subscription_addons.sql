-- Subscription add-ons: an add-on bought for a subscription. The row keeps the whole add-on
-- (the add-on version it came from, its rate cards as bought, its quantity timeline) as JSON
-- in `definition`; the columns are what lookups and the one-purchase-per-add-on check need.
-- Portable SQL: runs on SQLite and PostgreSQL.
CREATE TABLE subscription_addons (
    id               TEXT NOT NULL PRIMARY KEY,
    namespace        TEXT NOT NULL,
    subscription_id  TEXT NOT NULL,
    addon_id         TEXT NOT NULL,
    definition       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE UNIQUE INDEX subscription_addons_addon ON subscription_addons (namespace, subscription_id, addon_id);
