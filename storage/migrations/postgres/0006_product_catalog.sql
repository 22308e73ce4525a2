-- The PostgreSQL twin of ../sqlite/0006_product_catalog.sql (same tables, columns and indexes; see README.md).
-- The product catalog: versioned plans and add-ons, and the add-ons a plan offers.
-- Each row keeps its API read model as JSON in `definition`; the columns beside it are what
-- lookups, lifecycle and constraints need.
--
-- A version's status follows from its effective period at the time of reading, as in
-- OpenMeter: no effective_from = draft; effective_from in the future = scheduled;
-- effective_from <= now < effective_to (or no effective_to) = active; effective_to <= now = archived.
CREATE TABLE product_versions (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace       TEXT COLLATE "C" NOT NULL,
    kind            TEXT COLLATE "C" NOT NULL,          -- 'plan' | 'addon'
    key             TEXT COLLATE "C" NOT NULL,
    version         BIGINT NOT NULL,
    definition      TEXT COLLATE "C" NOT NULL,
    effective_from  BIGINT,
    effective_to    BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    deleted_at      BIGINT,
    UNIQUE (namespace, kind, key, version)
);
CREATE INDEX product_versions_key ON product_versions (namespace, kind, key);

CREATE TABLE plan_addons (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace   TEXT COLLATE "C" NOT NULL,
    plan_id     TEXT COLLATE "C" NOT NULL,
    addon_id    TEXT COLLATE "C" NOT NULL,
    definition  TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX plan_addons_plan ON plan_addons (namespace, plan_id);
