-- The same as internal/sqlite's 003_tokens.sql.
ALTER TABLE tokens ADD COLUMN scope      TEXT   NOT NULL DEFAULT 'admin';
ALTER TABLE tokens ADD COLUMN expires_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN revoked_ms BIGINT NOT NULL DEFAULT 0;
UPDATE tokens SET name = name || '-' || id WHERE id NOT IN (SELECT min(id) FROM tokens GROUP BY name);
CREATE UNIQUE INDEX tokens_name ON tokens (name);

ALTER TABLE events ADD COLUMN actor TEXT NOT NULL DEFAULT '';
