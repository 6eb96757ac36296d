-- Device labels (a JSON object), which rollouts select on, and what a
-- device last reported about itself (inventory_ms: when that last changed).
ALTER TABLE devices ADD COLUMN labels        TEXT    NOT NULL DEFAULT '{}';
ALTER TABLE devices ADD COLUMN chip          TEXT    NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN slot_size     INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN free_flash    INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN agent_version TEXT    NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN inventory_ms  INTEGER NOT NULL DEFAULT 0;

-- The rollout a session was opened for, and the rollout an event is about
-- (0: none).
ALTER TABLE sessions ADD COLUMN rollout_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN rollout_id INTEGER NOT NULL DEFAULT 0;
-- The device API of a session event's session: webhooks tell receivers
-- which outcomes came unauthenticated.
ALTER TABLE events ADD COLUMN api TEXT NOT NULL DEFAULT '';

-- Rollouts keep their history when their release is deleted (which only
-- aborted and completed ones allow): release_id is cleared, release_version
-- stays. device_ids, wave_ends and windows are JSON arrays (null: none).
CREATE TABLE rollouts (
    id                   INTEGER PRIMARY KEY,
    release_id           INTEGER REFERENCES releases (id) ON DELETE SET NULL,
    release_version      TEXT    NOT NULL,
    hardware             TEXT    NOT NULL,
    selector             TEXT    NOT NULL,
    device_ids           TEXT    NOT NULL,
    waves                TEXT    NOT NULL,
    wave_ends            TEXT    NOT NULL,
    soak_ms              INTEGER NOT NULL,
    max_failures_percent REAL    NOT NULL,
    max_failures         INTEGER NOT NULL,
    min_outcomes         INTEGER NOT NULL,
    silent_timeout_ms    INTEGER NOT NULL,
    windows              TEXT    NOT NULL,
    start_ms             INTEGER NOT NULL,
    state                TEXT    NOT NULL,
    wave                 INTEGER NOT NULL,
    wave_opened_ms       INTEGER NOT NULL,
    gate_base            INTEGER NOT NULL,
    reason               TEXT    NOT NULL,
    created_ms           INTEGER NOT NULL,
    updated_ms           INTEGER NOT NULL
);
CREATE INDEX rollouts_release ON rollouts (release_id);

-- session_id is the last session opened for the rollout ('' for none).
-- Every check-in reads a device's newest live membership through
-- rollout_members_device; tallies count a rollout's members through
-- rollout_members_tally without reading the rows.
CREATE TABLE rollout_members (
    rollout_id INTEGER NOT NULL REFERENCES rollouts (id),
    device_id  TEXT    NOT NULL REFERENCES devices (id),
    wave       INTEGER NOT NULL,
    state      TEXT    NOT NULL,
    reason     TEXT    NOT NULL DEFAULT '',
    session_id TEXT    NOT NULL DEFAULT '',
    offered_ms INTEGER NOT NULL DEFAULT 0,
    updated_ms INTEGER NOT NULL,
    -- legacy: the device is EcoWatt-only (kept in step with its policy);
    -- outcome_api: the API of the session that moved the member. The gate
    -- tells unauthenticated outcomes apart by these without a join.
    legacy      INTEGER NOT NULL DEFAULT 0,
    outcome_api TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (rollout_id, device_id)
) WITHOUT ROWID;
CREATE INDEX rollout_members_device ON rollout_members (device_id, rollout_id);
CREATE INDEX rollout_members_tally ON rollout_members (rollout_id, wave, state, legacy, outcome_api);
