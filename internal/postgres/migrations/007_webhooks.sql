-- Webhooks and their outbox: the tables of internal/sqlite's
-- 006_webhooks.sql, and what fan-out needs on PostgreSQL to read events
-- in the order they can no longer change.
--
-- An event's id is taken from its sequence when it is inserted, but it
-- becomes visible when its transaction commits, which may be after an
-- event with a higher id: a cursor on ids alone would step over it for
-- good. So each event also records its transaction (tx), and fan-out reads
-- in (tx, id) order only events of transactions older than every
-- transaction still running (pg_snapshot_xmin): none of those can commit
-- an event before the cursor any more. Events from before this migration
-- have no tx; no webhook's cursor is before them.
ALTER TABLE events ADD COLUMN tx xid8;
ALTER TABLE events ALTER COLUMN tx SET DEFAULT pg_current_xact_id();
CREATE INDEX events_tx ON events (tx, id);

-- cursor_tx, cursor_id: the last event fanned out to the webhook, in the
-- order above.
CREATE TABLE webhooks (
    id         BIGSERIAL PRIMARY KEY,
    url        TEXT   NOT NULL,
    events     TEXT   NOT NULL, -- patterns, comma-separated
    secret     TEXT   NOT NULL,
    created_ms BIGINT NOT NULL,
    cursor_tx  xid8   NOT NULL,
    cursor_id  BIGINT NOT NULL
);

CREATE TABLE webhook_deliveries (
    id              TEXT    PRIMARY KEY,
    webhook_id      BIGINT  NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        BIGINT  NOT NULL,
    event           TEXT    NOT NULL,
    payload         BYTEA   NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT  NOT NULL,
    lease_until_ms  BIGINT  NOT NULL DEFAULT 0,
    last_status     INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT '',
    last_attempt_ms BIGINT  NOT NULL DEFAULT 0,
    created_ms      BIGINT  NOT NULL,
    delivered_ms    BIGINT  NOT NULL DEFAULT 0,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_ms) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (webhook_id, state);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_ms);
