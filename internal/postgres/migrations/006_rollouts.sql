-- The same as internal/sqlite's 005_rollouts.sql. max_failures_percent is
-- DOUBLE PRECISION, as SQLite's REAL is: a float64 reads back exactly.
ALTER TABLE devices ADD COLUMN labels        TEXT   NOT NULL DEFAULT '{}';
ALTER TABLE devices ADD COLUMN chip          TEXT   NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN slot_size     BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN free_flash    BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN agent_version TEXT   NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN inventory_ms  BIGINT NOT NULL DEFAULT 0;

ALTER TABLE sessions ADD COLUMN rollout_id BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN rollout_id BIGINT NOT NULL DEFAULT 0;
-- The device API of a session event's session: webhooks tell receivers
-- which outcomes came unauthenticated.
ALTER TABLE events ADD COLUMN api TEXT NOT NULL DEFAULT '';

CREATE TABLE rollouts (
    id                   BIGSERIAL PRIMARY KEY,
    release_id           BIGINT  REFERENCES releases (id) ON DELETE SET NULL,
    release_version      TEXT    NOT NULL,
    hardware             TEXT    NOT NULL,
    selector             TEXT    NOT NULL,
    device_ids           TEXT    NOT NULL,
    waves                TEXT    NOT NULL,
    wave_ends            TEXT    NOT NULL,
    soak_ms              BIGINT  NOT NULL,
    max_failures_percent DOUBLE PRECISION NOT NULL,
    max_failures         INTEGER NOT NULL,
    min_outcomes         INTEGER NOT NULL,
    silent_timeout_ms    BIGINT  NOT NULL,
    windows              TEXT    NOT NULL,
    start_ms             BIGINT  NOT NULL,
    state                TEXT    NOT NULL,
    wave                 INTEGER NOT NULL,
    wave_opened_ms       BIGINT  NOT NULL,
    gate_base            INTEGER NOT NULL,
    reason               TEXT    NOT NULL,
    created_ms           BIGINT  NOT NULL,
    updated_ms           BIGINT  NOT NULL
);
CREATE INDEX rollouts_release ON rollouts (release_id);

CREATE TABLE rollout_members (
    rollout_id BIGINT  NOT NULL REFERENCES rollouts (id),
    device_id  TEXT    NOT NULL REFERENCES devices (id),
    wave       INTEGER NOT NULL,
    state      TEXT    NOT NULL,
    reason     TEXT    NOT NULL DEFAULT '',
    session_id TEXT    NOT NULL DEFAULT '',
    offered_ms BIGINT  NOT NULL DEFAULT 0,
    updated_ms BIGINT  NOT NULL,
    -- legacy: the device is EcoWatt-only (kept in step with its policy);
    -- outcome_api: the API of the session that moved the member. The gate
    -- tells unauthenticated outcomes apart by these without a join.
    legacy      BOOLEAN NOT NULL DEFAULT false,
    outcome_api TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (rollout_id, device_id)
);
CREATE INDEX rollout_members_device ON rollout_members (device_id, rollout_id);
CREATE INDEX rollout_members_tally ON rollout_members (rollout_id, wave, state, legacy, outcome_api);
