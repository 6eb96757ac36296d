-- Tombstones and withdrawals: a removed device and a withdrawn release keep
-- their rows, so the history that names them stays readable (0: neither).
ALTER TABLE devices ADD COLUMN removed_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE releases ADD COLUMN withdrawn_ms INTEGER NOT NULL DEFAULT 0;

-- Retention prunes the oldest first, a small batch at a time: these let it
-- find them without scanning the tables. The sessions index covers what
-- the prune filters on (state, api), so counting the newest reads no rows.
CREATE INDEX events_time ON events (time_ms);
CREATE INDEX sessions_updated ON sessions (updated_ms, state, api);
CREATE INDEX devices_removed ON devices (removed_ms) WHERE removed_ms > 0;
