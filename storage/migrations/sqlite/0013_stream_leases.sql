-- Which node reads which partition of a shared event stream (Kafka, Fluvio): a lease per
-- partition, renewed by its holder, taken over only once it has expired. `epoch` grows by one
-- at every acquisition and fences the holder's renewals and releases.
CREATE TABLE stream_leases (
    stream TEXT NOT NULL,
    partition_id BIGINT NOT NULL,
    node_id TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (stream, partition_id)
);
