-- The product catalog: versioned plans and add-ons, and the add-ons a plan offers.
-- Portable SQL: runs on SQLite and PostgreSQL. Each row keeps its API read model as JSON in
-- `definition`; the columns beside it are what lookups, lifecycle and constraints need.
--
-- A version's status follows from its effective period at the time of reading, as in
-- OpenMeter: no effective_from = draft; effective_from in the future = scheduled;
-- effective_from <= now < effective_to (or no effective_to) = active; effective_to <= now = archived.
CREATE TABLE product_versions (
    id              TEXT NOT NULL PRIMARY KEY,
    namespace       TEXT NOT NULL,
    kind            TEXT NOT NULL,          -- 'plan' | 'addon'
    key             TEXT NOT NULL,
    version         BIGINT NOT NULL,
    definition      TEXT NOT NULL,
    effective_from  BIGINT,
    effective_to    BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    deleted_at      BIGINT,
    UNIQUE (namespace, kind, key, version)
);
CREATE INDEX product_versions_key ON product_versions (namespace, kind, key);

CREATE TABLE plan_addons (
    id          TEXT NOT NULL PRIMARY KEY,
    namespace   TEXT NOT NULL,
    plan_id     TEXT NOT NULL,
    addon_id    TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX plan_addons_plan ON plan_addons (namespace, plan_id);
