-- The PostgreSQL twin of ../sqlite/0003_notifications.sql (same tables, columns and indexes; see README.md).
-- Notification channels, rules, events, their per-channel delivery status and the fired
-- balance thresholds. Documents are JSON text; the columns beside them are what queries
-- filter and order by.
CREATE TABLE notification_channels (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace   TEXT COLLATE "C" NOT NULL,
    definition  TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX notification_channels_namespace ON notification_channels (namespace, created_at);

CREATE TABLE notification_rules (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace   TEXT COLLATE "C" NOT NULL,
    definition  TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX notification_rules_namespace ON notification_rules (namespace, created_at);

CREATE TABLE notification_events (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace   TEXT COLLATE "C" NOT NULL,
    rule_id     TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    definition  TEXT COLLATE "C" NOT NULL
);
CREATE INDEX notification_events_namespace ON notification_events (namespace, created_at);

CREATE TABLE notification_deliveries (
    event_id      TEXT COLLATE "C" NOT NULL,
    channel_id    TEXT COLLATE "C" NOT NULL,
    namespace     TEXT COLLATE "C" NOT NULL,
    state         TEXT COLLATE "C" NOT NULL,
    definition    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (event_id, channel_id)
);
CREATE INDEX notification_deliveries_state ON notification_deliveries (state);

CREATE TABLE notification_thresholds (
    dedup_key   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    namespace   TEXT COLLATE "C" NOT NULL,
    threshold   TEXT COLLATE "C" NOT NULL,
    updated_at  BIGINT NOT NULL
);
