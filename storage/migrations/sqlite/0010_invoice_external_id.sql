-- The invoicing app's id of an invoice (Stripe's `in_…`), so that a webhook finds its invoice
-- by index instead of reading every invoice of the namespace.
ALTER TABLE invoices ADD COLUMN external_invoicing_id TEXT;
CREATE INDEX invoices_external ON invoices (namespace, external_invoicing_id);
