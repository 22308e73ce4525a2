-- Meters of every namespace. Portable SQL: runs on SQLite and PostgreSQL.
CREATE TABLE meters (
    id          TEXT NOT NULL PRIMARY KEY,
    namespace   TEXT NOT NULL,
    slug        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX meters_namespace_slug ON meters (namespace, slug);
