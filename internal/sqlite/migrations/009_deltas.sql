-- A release's delta artifacts (issue 18): one patch per base image, in the
-- bundle's order (position). Each is encrypted like the full image, with
-- its own signed manifest; its ciphertext is a blob like the release's.
-- They go with their release.
CREATE TABLE release_deltas (
    release_id        INTEGER NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    position          INTEGER NOT NULL,
    base_sha256       TEXT    NOT NULL,
    base_version      TEXT    NOT NULL,
    base_size         INTEGER NOT NULL,
    compression       TEXT    NOT NULL,
    patch_size        INTEGER NOT NULL,
    ciphertext_size   INTEGER NOT NULL,
    ciphertext_sha256 TEXT    NOT NULL,
    manifest          BLOB    NOT NULL,
    signature         BLOB    NOT NULL,
    blob_key          TEXT    NOT NULL,
    PRIMARY KEY (release_id, position),
    UNIQUE (release_id, base_sha256)
);
-- BlobInUse, which the blob sweep asks for every blob, reads this.
CREATE INDEX release_deltas_blob ON release_deltas (blob_key);

-- The base SHA-256 of the delta a session serves; '' for the full image
-- (every session before this).
ALTER TABLE sessions ADD COLUMN delta_base TEXT NOT NULL DEFAULT '';
-- Traffic by release or rollout reads only those sessions (and deleting
-- a release, which clears its sessions' release_id, finds them by it).
-- DeltaFailures reads sessions_device_state (device_id, state).
CREATE INDEX sessions_release ON sessions (release_id);
CREATE INDEX sessions_rollout ON sessions (rollout_id) WHERE rollout_id <> 0;
