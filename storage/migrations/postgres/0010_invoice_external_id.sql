-- The PostgreSQL twin of ../sqlite/0010_invoice_external_id.sql (same tables, columns and indexes; see README.md).
-- The invoicing app's id of an invoice (Stripe's `in_…`), so that a webhook finds its invoice
-- by index instead of reading every invoice of the namespace.
ALTER TABLE invoices ADD COLUMN external_invoicing_id TEXT COLLATE "C";
CREATE INDEX invoices_external ON invoices (namespace, external_invoicing_id);
