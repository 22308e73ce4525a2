-- Entitlements, their grants and manual resets. Each row keeps the record as JSON
-- (`definition`) beside the columns lookups use. Portable SQL: SQLite and PostgreSQL.
CREATE TABLE entitlements (
    id          TEXT NOT NULL PRIMARY KEY,
    namespace   TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    feature_id  TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX entitlements_customer ON entitlements (namespace, customer_id);

CREATE TABLE grants (
    id             TEXT NOT NULL PRIMARY KEY,
    namespace      TEXT NOT NULL,
    entitlement_id TEXT NOT NULL,
    definition     TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX grants_entitlement ON grants (entitlement_id);
CREATE INDEX grants_namespace ON grants (namespace, created_at);

CREATE TABLE entitlement_resets (
    id             TEXT NOT NULL PRIMARY KEY,
    namespace      TEXT NOT NULL,
    entitlement_id TEXT NOT NULL,
    definition     TEXT NOT NULL,
    reset_at       BIGINT NOT NULL
);
CREATE INDEX entitlement_resets_entitlement ON entitlement_resets (entitlement_id, reset_at);
