-- Apps (sandbox, stripe, custom_invoicing), their secrets and per-customer data, billing
-- profiles and customer overrides of every namespace. Portable SQL: runs on SQLite and
-- PostgreSQL. Each row keeps its API read model as JSON in `definition`; the columns beside
-- it are what lookups and constraints need.
CREATE TABLE apps (
    id          TEXT NOT NULL PRIMARY KEY,
    namespace   TEXT NOT NULL,
    type        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX apps_namespace_type ON apps (namespace, type);

-- What an app keeps out of its read model: the Stripe API key, the webhook endpoint's
-- id and signing secret. Never answered by the API; deleted with the app.
CREATE TABLE app_secrets (
    app_id      TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (app_id, name)
);

-- A customer's data in an app (the linked Stripe customer and payment method, ...).
CREATE TABLE app_customers (
    app_id       TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    namespace    TEXT NOT NULL,
    definition   TEXT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (app_id, customer_id)
);
CREATE INDEX app_customers_customer ON app_customers (namespace, customer_id);

-- Billing profiles; the partial unique index keeps at most one live default per namespace.
CREATE TABLE billing_profiles (
    id          TEXT NOT NULL PRIMARY KEY,
    namespace   TEXT NOT NULL,
    is_default  INTEGER NOT NULL,
    definition  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX billing_profiles_namespace ON billing_profiles (namespace, created_at);
CREATE UNIQUE INDEX billing_profiles_one_default ON billing_profiles (namespace)
    WHERE is_default = 1 AND deleted_at IS NULL;

-- A customer's pinned billing profile (NULL: the namespace's default) and workflow overrides.
CREATE TABLE billing_customer_overrides (
    namespace    TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    profile_id   TEXT,
    definition   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (namespace, customer_id)
);
CREATE INDEX billing_customer_overrides_profile ON billing_customer_overrides (profile_id);
