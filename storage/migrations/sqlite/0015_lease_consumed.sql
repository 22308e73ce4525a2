-- How far the holder has read each partition, reported at every renewal: a standby that takes
-- events for the holder answers 429 when the holder is too far behind, as the holder itself does.
ALTER TABLE stream_leases ADD COLUMN consumed BIGINT;
