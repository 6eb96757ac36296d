-- The same as internal/sqlite's 007_users.sql. BIGSERIAL never gives a
-- removed user's id to another.
CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT   NOT NULL UNIQUE,
    role          TEXT   NOT NULL,
    password_hash TEXT   NOT NULL,
    created_ms    BIGINT NOT NULL
);

CREATE TABLE web_sessions (
    hash         BYTEA  PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_ms   BIGINT NOT NULL,
    expires_ms   BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    revoked_ms   BIGINT NOT NULL DEFAULT 0,
    address      TEXT   NOT NULL,
    agent        TEXT   NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (user_id, created_ms);

-- The dashboard filters events by actor and by rollout; partial, so the
-- inserts of events with neither are left alone.
CREATE INDEX events_actor ON events (actor, id) WHERE actor <> '';
CREATE INDEX events_rollout ON events (rollout_id, id) WHERE rollout_id <> 0;
