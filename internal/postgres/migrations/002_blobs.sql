-- Release ciphertexts kept in the database, for replicas with no shared
-- folder. A blob is a row plus fixed-size pieces; key is NULL until the
-- writer commits, so a half-written blob is never visible.
CREATE TABLE blobs (
    id         BIGSERIAL PRIMARY KEY,
    key        TEXT UNIQUE,
    size       BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL
);

CREATE TABLE blob_pieces (
    blob_id BIGINT  NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
    idx     INTEGER NOT NULL,
    data    BYTEA   NOT NULL,
    PRIMARY KEY (blob_id, idx)
);

-- Ciphertext does not compress; skip the attempt.
ALTER TABLE blob_pieces ALTER COLUMN data SET STORAGE EXTERNAL;
