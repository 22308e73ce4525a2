-- Stripe webhook events already acted on, per app: a redelivered or replayed event has no
-- second effect. Portable SQL: runs on SQLite and PostgreSQL.
CREATE TABLE stripe_webhook_events (
    app_id        TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    processed_at  BIGINT NOT NULL,
    PRIMARY KEY (app_id, event_id)
);
