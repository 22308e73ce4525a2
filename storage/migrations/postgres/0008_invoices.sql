-- The PostgreSQL twin of ../sqlite/0008_invoices.sql (same tables, columns and indexes; see README.md).
-- Invoices and invoice lines. Each row keeps its whole record as JSON in `definition`; the
-- columns are what lookups, collection and idempotent line generation need.
CREATE TABLE invoices (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace    TEXT COLLATE "C" NOT NULL,
    customer_id  TEXT COLLATE "C" NOT NULL,
    currency     TEXT COLLATE "C" NOT NULL,
    status       TEXT COLLATE "C" NOT NULL,
    definition   TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    deleted_at   BIGINT
);
CREATE INDEX invoices_customer ON invoices (namespace, customer_id, status);

-- `line_key` names what a line bills (subscription, item, billing period start): a line is
-- generated at most once, whatever crashes or retries happen around it.
CREATE TABLE invoice_lines (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace    TEXT COLLATE "C" NOT NULL,
    invoice_id   TEXT COLLATE "C" NOT NULL,
    customer_id  TEXT COLLATE "C" NOT NULL,
    line_key     TEXT COLLATE "C" NOT NULL,
    definition   TEXT COLLATE "C" NOT NULL,
    invoice_at   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    deleted_at   BIGINT,
    UNIQUE (namespace, line_key)
);
CREATE INDEX invoice_lines_invoice ON invoice_lines (namespace, invoice_id);

-- Gapless counters (invoice numbers).
CREATE TABLE sequences (
    namespace  TEXT COLLATE "C" NOT NULL,
    scope      TEXT COLLATE "C" NOT NULL,
    value      BIGINT NOT NULL,
    PRIMARY KEY (namespace, scope)
);
