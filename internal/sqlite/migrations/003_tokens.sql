-- Tokens get a scope, an expiry and a revocation time, and are known by a
-- unique name (duplicate names of older tokens get their id appended).
ALTER TABLE tokens ADD COLUMN scope      TEXT    NOT NULL DEFAULT 'admin';
ALTER TABLE tokens ADD COLUMN expires_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN revoked_ms INTEGER NOT NULL DEFAULT 0;
UPDATE tokens SET name = name || '-' || id WHERE id NOT IN (SELECT min(id) FROM tokens GROUP BY name);
CREATE UNIQUE INDEX tokens_name ON tokens (name);

-- Who made an operator's change: "token:NAME".
ALTER TABLE events ADD COLUMN actor TEXT NOT NULL DEFAULT '';
