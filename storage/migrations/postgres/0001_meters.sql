-- The PostgreSQL twin of ../sqlite/0001_meters.sql (same tables, columns and indexes; see README.md).
-- Meters of every namespace.
CREATE TABLE meters (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace   TEXT COLLATE "C" NOT NULL,
    slug        TEXT COLLATE "C" NOT NULL,
    definition  TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX meters_namespace_slug ON meters (namespace, slug);
