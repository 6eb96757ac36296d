-- The same as internal/sqlite's 002_api_policy.sql.
ALTER TABLE devices ADD COLUMN api TEXT NOT NULL DEFAULT 'native';

CREATE TABLE backoffs (
    device_id  TEXT   NOT NULL REFERENCES devices (id),
    release_id BIGINT NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    failures   INTEGER NOT NULL,
    until_ms   BIGINT NOT NULL,
    PRIMARY KEY (device_id, release_id)
);
