-- The PostgreSQL twin of ../sqlite/0013_stream_leases.sql (same tables, columns and indexes; see README.md).
-- Which node reads which partition of a shared event stream (Kafka, Fluvio): a lease per
-- partition, renewed by its holder, taken over only once it has expired. `epoch` grows by one
-- at every acquisition and fences the holder's renewals and releases.
CREATE TABLE stream_leases (
    stream TEXT COLLATE "C" NOT NULL,
    partition_id BIGINT NOT NULL,
    node_id TEXT COLLATE "C" NOT NULL,
    epoch BIGINT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (stream, partition_id)
);
