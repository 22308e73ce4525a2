-- The PostgreSQL twin of ../sqlite/0004_entitlements.sql (same tables, columns and indexes; see README.md).
-- Entitlements, their grants and manual resets. Each row keeps the record as JSON
-- (`definition`) beside the columns lookups use.
CREATE TABLE entitlements (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace   TEXT COLLATE "C" NOT NULL,
    customer_id TEXT COLLATE "C" NOT NULL,
    feature_id  TEXT COLLATE "C" NOT NULL,
    definition  TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX entitlements_customer ON entitlements (namespace, customer_id);

CREATE TABLE grants (
    id             TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace      TEXT COLLATE "C" NOT NULL,
    entitlement_id TEXT COLLATE "C" NOT NULL,
    definition     TEXT COLLATE "C" NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX grants_entitlement ON grants (entitlement_id);
CREATE INDEX grants_namespace ON grants (namespace, created_at);

CREATE TABLE entitlement_resets (
    id             TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace      TEXT COLLATE "C" NOT NULL,
    entitlement_id TEXT COLLATE "C" NOT NULL,
    definition     TEXT COLLATE "C" NOT NULL,
    reset_at       BIGINT NOT NULL
);
CREATE INDEX entitlement_resets_entitlement ON entitlement_resets (entitlement_id, reset_at);
