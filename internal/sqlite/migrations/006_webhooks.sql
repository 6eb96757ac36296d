-- Webhooks and their outbox. cursor_id is the last event fanned out to the
-- webhook: events are numbered as they commit (one writer at a time), so
-- every event after it is still to be read. AUTOINCREMENT: a removed
-- webhook's id is never given to another.
CREATE TABLE webhooks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    url        TEXT    NOT NULL,
    events     TEXT    NOT NULL, -- patterns, comma-separated
    secret     TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    cursor_id  INTEGER NOT NULL
);

-- One event on its way to one webhook. id is the random delivery id sent
-- with every attempt. event_id names no row: events are pruned on their
-- own schedule, the payload keeps what was sent.
CREATE TABLE webhook_deliveries (
    id              TEXT    PRIMARY KEY,
    webhook_id      INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        INTEGER NOT NULL,
    event           TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    lease_until_ms  INTEGER NOT NULL DEFAULT 0,
    last_status     INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT '',
    last_attempt_ms INTEGER NOT NULL DEFAULT 0,
    created_ms      INTEGER NOT NULL,
    delivered_ms    INTEGER NOT NULL DEFAULT 0,
    UNIQUE (webhook_id, event_id)
);
-- Claims look for due pending deliveries; lists count pending and failed
-- ones per webhook; pruning finds old ended ones.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_ms) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (webhook_id, state);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_ms);
