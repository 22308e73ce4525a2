-- The PostgreSQL twin of ../sqlite/0009_stripe_webhook_events.sql (same tables, columns and indexes; see README.md).
-- Stripe webhook events already acted on, per app: a redelivered or replayed event has no
-- second effect.
CREATE TABLE stripe_webhook_events (
    app_id        TEXT COLLATE "C" NOT NULL,
    event_id      TEXT COLLATE "C" NOT NULL,
    processed_at  BIGINT NOT NULL,
    PRIMARY KEY (app_id, event_id)
);
