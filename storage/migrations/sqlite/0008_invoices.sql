-- Invoices and invoice lines. Each row keeps its whole record as JSON in `definition`; the
-- columns are what lookups, collection and idempotent line generation need.
-- Portable SQL: runs on SQLite and PostgreSQL.
CREATE TABLE invoices (
    id           TEXT NOT NULL PRIMARY KEY,
    namespace    TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    currency     TEXT NOT NULL,
    status       TEXT NOT NULL,
    definition   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    deleted_at   BIGINT
);
CREATE INDEX invoices_customer ON invoices (namespace, customer_id, status);

-- `line_key` names what a line bills (subscription, item, billing period start): a line is
-- generated at most once, whatever crashes or retries happen around it.
CREATE TABLE invoice_lines (
    id           TEXT NOT NULL PRIMARY KEY,
    namespace    TEXT NOT NULL,
    invoice_id   TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    line_key     TEXT NOT NULL,
    definition   TEXT NOT NULL,
    invoice_at   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    deleted_at   BIGINT,
    UNIQUE (namespace, line_key)
);
CREATE INDEX invoice_lines_invoice ON invoice_lines (namespace, invoice_id);

-- Gapless counters (invoice numbers).
CREATE TABLE sequences (
    namespace  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    value      BIGINT NOT NULL,
    PRIMARY KEY (namespace, scope)
);
