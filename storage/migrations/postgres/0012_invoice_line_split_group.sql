-- The PostgreSQL twin of ../sqlite/0012_invoice_line_split_group.sql (same tables, columns and indexes; see README.md).
-- Progressive billing: the split line group a line belongs to (its JSON's `split.groupId`),
-- as a column so that a group's parts are found by an index.
ALTER TABLE invoice_lines ADD COLUMN split_group_id TEXT COLLATE "C";
CREATE INDEX invoice_lines_split_group ON invoice_lines (namespace, split_group_id);
