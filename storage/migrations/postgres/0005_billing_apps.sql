-- The PostgreSQL twin of ../sqlite/0005_billing_apps.sql (same tables, columns and indexes; see README.md).
-- Apps (sandbox, stripe, custom_invoicing), their secrets and per-customer data, billing
-- profiles and customer overrides of every namespace. Each row keeps its API read model as
-- JSON in `definition`; the columns beside it are what lookups and constraints need.
CREATE TABLE apps (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace   TEXT COLLATE "C" NOT NULL,
    type        TEXT COLLATE "C" NOT NULL,
    definition  TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX apps_namespace_type ON apps (namespace, type);

-- What an app keeps out of its read model: the Stripe API key, the webhook endpoint's
-- id and signing secret. Never answered by the API; deleted with the app.
CREATE TABLE app_secrets (
    app_id      TEXT COLLATE "C" NOT NULL,
    namespace   TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    value       TEXT COLLATE "C" NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (app_id, name)
);

-- A customer's data in an app (the linked Stripe customer and payment method, ...).
CREATE TABLE app_customers (
    app_id       TEXT COLLATE "C" NOT NULL,
    customer_id  TEXT COLLATE "C" NOT NULL,
    namespace    TEXT COLLATE "C" NOT NULL,
    definition   TEXT COLLATE "C" NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (app_id, customer_id)
);
CREATE INDEX app_customers_customer ON app_customers (namespace, customer_id);

-- Billing profiles; the partial unique index keeps at most one live default per namespace.
CREATE TABLE billing_profiles (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace   TEXT COLLATE "C" NOT NULL,
    is_default  BIGINT NOT NULL CHECK (is_default IN (0, 1)),
    definition  TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX billing_profiles_namespace ON billing_profiles (namespace, created_at);
CREATE UNIQUE INDEX billing_profiles_one_default ON billing_profiles (namespace)
    WHERE is_default = 1 AND deleted_at IS NULL;

-- A customer's pinned billing profile (NULL: the namespace's default) and workflow overrides.
CREATE TABLE billing_customer_overrides (
    namespace    TEXT COLLATE "C" NOT NULL,
    customer_id  TEXT COLLATE "C" NOT NULL,
    profile_id   TEXT COLLATE "C",
    definition   TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (namespace, customer_id)
);
CREATE INDEX billing_customer_overrides_profile ON billing_customer_overrides (profile_id);
