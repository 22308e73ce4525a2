-- The PostgreSQL twin of ../sqlite/0007_subscriptions.sql (same tables, columns and indexes; see README.md).
-- Subscriptions: a customer's schedule of plan phases and rate cards. The row keeps the whole
-- subscription (phases with absolute starts, items, the entitlements they created) as JSON in
-- `definition`; the columns are what lookups and the one-subscription-at-a-time check need.
CREATE TABLE subscriptions (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace    TEXT COLLATE "C" NOT NULL,
    customer_id  TEXT COLLATE "C" NOT NULL,
    definition   TEXT COLLATE "C" NOT NULL,
    active_from  BIGINT NOT NULL,
    active_to    BIGINT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    deleted_at   BIGINT
);
CREATE INDEX subscriptions_customer ON subscriptions (namespace, customer_id);
