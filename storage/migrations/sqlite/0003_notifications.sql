-- Notification channels, rules, events, their per-channel delivery status and the fired
-- balance thresholds. Portable SQL: runs on SQLite and PostgreSQL. Documents are JSON text;
-- the columns beside them are what queries filter and order by.
CREATE TABLE notification_channels (
    id          TEXT NOT NULL PRIMARY KEY,
    namespace   TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX notification_channels_namespace ON notification_channels (namespace, created_at);

CREATE TABLE notification_rules (
    id          TEXT NOT NULL PRIMARY KEY,
    namespace   TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX notification_rules_namespace ON notification_rules (namespace, created_at);

CREATE TABLE notification_events (
    id          TEXT NOT NULL PRIMARY KEY,
    namespace   TEXT NOT NULL,
    rule_id     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    definition  TEXT NOT NULL
);
CREATE INDEX notification_events_namespace ON notification_events (namespace, created_at);

CREATE TABLE notification_deliveries (
    event_id      TEXT NOT NULL,
    channel_id    TEXT NOT NULL,
    namespace     TEXT NOT NULL,
    state         TEXT NOT NULL,
    definition    TEXT NOT NULL,
    PRIMARY KEY (event_id, channel_id)
);
CREATE INDEX notification_deliveries_state ON notification_deliveries (state);

CREATE TABLE notification_thresholds (
    dedup_key   TEXT NOT NULL PRIMARY KEY,
    namespace   TEXT NOT NULL,
    threshold   TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
