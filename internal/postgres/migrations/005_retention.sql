-- The same as internal/sqlite's 004_retention.sql.
ALTER TABLE devices ADD COLUMN removed_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE releases ADD COLUMN withdrawn_ms BIGINT NOT NULL DEFAULT 0;

CREATE INDEX events_time ON events (time_ms);
CREATE INDEX sessions_updated ON sessions (updated_ms, state, api);
CREATE INDEX devices_removed ON devices (removed_ms) WHERE removed_ms > 0;
