-- Dashboard users. password_hash is an argon2id PHC string
-- (internal/password). AUTOINCREMENT: a removed user's id is never given
-- to another, so nothing that named the old user can name the new one.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    role          TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL
);

-- Signed-in browsers, known only by the SHA-256 of their cookie's token.
-- revoked_ms is 0 while in force. A user's sessions go with it.
CREATE TABLE web_sessions (
    hash         BLOB    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    revoked_ms   INTEGER NOT NULL DEFAULT 0,
    address      TEXT    NOT NULL,
    agent        TEXT    NOT NULL
) WITHOUT ROWID;
CREATE INDEX web_sessions_user ON web_sessions (user_id, created_ms);

-- The dashboard filters events by who made them and by rollout. Only
-- operators' changes have an actor, and only the events of rollouts and of
-- their sessions a rollout, so these partial indexes leave the inserts of
-- every other event alone. (A filter by kind alone reads the log newest
-- first until it has a page: quick for common kinds, a scan for rare ones.)
CREATE INDEX events_actor ON events (actor, id) WHERE actor <> '';
CREATE INDEX events_rollout ON events (rollout_id, id) WHERE rollout_id <> 0;
