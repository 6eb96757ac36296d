-- Releases: verified bundles. The ciphertext lives in the blob store.
CREATE TABLE releases (
    id                INTEGER PRIMARY KEY,
    product           TEXT    NOT NULL,
    hardware          TEXT    NOT NULL,
    version           TEXT    NOT NULL,
    security_counter  INTEGER NOT NULL,
    plaintext_size    INTEGER NOT NULL,
    plaintext_sha256  TEXT    NOT NULL,
    ciphertext_size   INTEGER NOT NULL,
    ciphertext_sha256 TEXT    NOT NULL,
    chunk_size        INTEGER NOT NULL,
    iv                TEXT    NOT NULL,
    key_id            TEXT    NOT NULL,
    signature_alg     TEXT    NOT NULL,
    notes             TEXT    NOT NULL,
    created_ms        INTEGER NOT NULL,
    published_ms      INTEGER NOT NULL,
    manifest          BLOB    NOT NULL,
    signature         BLOB    NOT NULL,
    legacy_signature  BLOB,
    blob_key          TEXT    NOT NULL,
    UNIQUE (hardware, version)
);

CREATE TABLE devices (
    id               TEXT    PRIMARY KEY,
    hardware         TEXT    NOT NULL,
    version          TEXT    NOT NULL,
    security_counter INTEGER NOT NULL,
    psk              BLOB    NOT NULL,
    pinned_version   TEXT    NOT NULL DEFAULT '',
    created_ms       INTEGER NOT NULL,
    last_seen_ms     INTEGER NOT NULL DEFAULT 0
);

-- Sessions keep their history when a release is deleted: release_id is
-- cleared, release_version stays.
CREATE TABLE sessions (
    id              TEXT    PRIMARY KEY,
    device_id       TEXT    NOT NULL REFERENCES devices (id),
    release_id      INTEGER REFERENCES releases (id) ON DELETE SET NULL,
    release_version TEXT    NOT NULL,
    api             TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    reason          TEXT    NOT NULL DEFAULT '',
    next_chunk      INTEGER NOT NULL DEFAULT 0,
    total_chunks    INTEGER NOT NULL,
    bytes_served    INTEGER NOT NULL DEFAULT 0,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
);
CREATE INDEX sessions_device_state ON sessions (device_id, state);
CREATE INDEX sessions_state ON sessions (state, updated_ms);

CREATE TABLE events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms         INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    device_id       TEXT    NOT NULL DEFAULT '',
    release_version TEXT    NOT NULL DEFAULT '',
    session_id      TEXT    NOT NULL DEFAULT '',
    detail          TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX events_device ON events (device_id, id);

CREATE TABLE tokens (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    hash       BLOB    NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);

CREATE TABLE nonces (
    device_id  TEXT    NOT NULL,
    nonce      TEXT    NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (device_id, nonce)
);
CREATE INDEX nonces_expires ON nonces (expires_ms);
