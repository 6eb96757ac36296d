-- The same schema as internal/sqlite's, in PostgreSQL's types.
CREATE TABLE releases (
    id                BIGSERIAL PRIMARY KEY,
    product           TEXT    NOT NULL,
    hardware          TEXT    NOT NULL,
    version           TEXT    NOT NULL,
    security_counter  BIGINT  NOT NULL,
    plaintext_size    BIGINT  NOT NULL,
    plaintext_sha256  TEXT    NOT NULL,
    ciphertext_size   BIGINT  NOT NULL,
    ciphertext_sha256 TEXT    NOT NULL,
    chunk_size        INTEGER NOT NULL,
    iv                TEXT    NOT NULL,
    key_id            TEXT    NOT NULL,
    signature_alg     TEXT    NOT NULL,
    notes             TEXT    NOT NULL,
    created_ms        BIGINT  NOT NULL,
    published_ms      BIGINT  NOT NULL,
    manifest          BYTEA   NOT NULL,
    signature         BYTEA   NOT NULL,
    legacy_signature  BYTEA,
    blob_key          TEXT    NOT NULL,
    UNIQUE (hardware, version)
);

CREATE TABLE devices (
    id               TEXT    PRIMARY KEY,
    hardware         TEXT    NOT NULL,
    version          TEXT    NOT NULL,
    security_counter BIGINT  NOT NULL,
    psk              BYTEA   NOT NULL,
    pinned_version   TEXT    NOT NULL DEFAULT '',
    created_ms       BIGINT  NOT NULL,
    last_seen_ms     BIGINT  NOT NULL DEFAULT 0
);

CREATE TABLE sessions (
    id              TEXT    PRIMARY KEY,
    device_id       TEXT    NOT NULL REFERENCES devices (id),
    release_id      BIGINT  REFERENCES releases (id) ON DELETE SET NULL,
    release_version TEXT    NOT NULL,
    api             TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    reason          TEXT    NOT NULL DEFAULT '',
    next_chunk      INTEGER NOT NULL DEFAULT 0,
    total_chunks    INTEGER NOT NULL,
    bytes_served    BIGINT  NOT NULL DEFAULT 0,
    created_ms      BIGINT  NOT NULL,
    updated_ms      BIGINT  NOT NULL
);
CREATE INDEX sessions_device_state ON sessions (device_id, state);
CREATE INDEX sessions_state ON sessions (state, updated_ms);

CREATE TABLE events (
    id              BIGSERIAL PRIMARY KEY,
    time_ms         BIGINT NOT NULL,
    kind            TEXT   NOT NULL,
    device_id       TEXT   NOT NULL DEFAULT '',
    release_version TEXT   NOT NULL DEFAULT '',
    session_id      TEXT   NOT NULL DEFAULT '',
    detail          TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX events_device ON events (device_id, id);

CREATE TABLE tokens (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT   NOT NULL,
    hash       BYTEA  NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL
);

CREATE TABLE nonces (
    device_id  TEXT   NOT NULL,
    nonce      TEXT   NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (device_id, nonce)
);
CREATE INDEX nonces_expires ON nonces (expires_ms);
