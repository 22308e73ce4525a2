-- Progressive billing: the split line group a line belongs to (its JSON's `split.groupId`),
-- as a column so that a group's parts are found by an index, on SQLite and PostgreSQL alike.
ALTER TABLE invoice_lines ADD COLUMN split_group_id TEXT;
CREATE INDEX invoice_lines_split_group ON invoice_lines (namespace, split_group_id);
