-- The PostgreSQL twin of ../sqlite/0002_customers.sql (same tables, columns and indexes; see README.md).
-- Customers, their usage attribution, subjects and features of every namespace. Each row
-- keeps its API read model as JSON in `definition`; the columns beside it are what lookups
-- and constraints need.
CREATE TABLE customers (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace   TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C",
    definition  TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX customers_namespace_key ON customers (namespace, key);

-- Usage attribution of live customers: the customer's key and its subject keys.
-- The primary key makes a subject belong to at most one live customer; a customer's
-- rows are deleted with it.
CREATE TABLE customer_subjects (
    namespace    TEXT COLLATE "C" NOT NULL,
    subject_key  TEXT COLLATE "C" NOT NULL,
    customer_id  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (namespace, subject_key)
);
CREATE INDEX customer_subjects_customer ON customer_subjects (customer_id);

CREATE TABLE subjects (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace   TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    definition  TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (namespace, key)
);

CREATE TABLE features (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace    TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    definition   TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    archived_at  BIGINT
);
CREATE INDEX features_namespace_key ON features (namespace, key);
