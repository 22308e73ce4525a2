-- The PostgreSQL twin of ../sqlite/0014_lease_address.sql (see README.md).
-- The URL of the holder's HTTP API, where the other nodes forward what only the holder of a
-- stream's partitions can answer (live balances, meter queries, catalog changes).
ALTER TABLE stream_leases ADD COLUMN address TEXT COLLATE "C";
