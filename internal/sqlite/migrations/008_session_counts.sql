-- How many sessions are active on each API, for the session caps: an open
-- reads these rows instead of counting every active session, which with a
-- rollout wave's 10,000 sessions was most of what an open cost. The
-- triggers keep them exact in the transaction that changes a session.
-- The active states are fota.SessionActive's; a new one needs a migration
-- that redefines these triggers.
CREATE TABLE session_counts (
    api    TEXT    PRIMARY KEY,
    active INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO session_counts (api, active)
    SELECT api, count(*) FROM sessions WHERE state IN ('open', 'downloaded', 'verified', 'applied') GROUP BY api;

CREATE TRIGGER session_counts_insert AFTER INSERT ON sessions
WHEN NEW.state IN ('open', 'downloaded', 'verified', 'applied')
BEGIN
    INSERT INTO session_counts (api, active) VALUES (NEW.api, 1)
        ON CONFLICT (api) DO UPDATE SET active = active + 1;
END;

-- Steps between active states (open to downloaded, ...) change no count.
CREATE TRIGGER session_counts_update AFTER UPDATE OF state, api ON sessions
WHEN (OLD.state IN ('open', 'downloaded', 'verified', 'applied')) <> (NEW.state IN ('open', 'downloaded', 'verified', 'applied'))
    OR (OLD.api <> NEW.api AND NEW.state IN ('open', 'downloaded', 'verified', 'applied'))
BEGIN
    UPDATE session_counts SET active = active - 1
        WHERE api = OLD.api AND OLD.state IN ('open', 'downloaded', 'verified', 'applied');
    INSERT INTO session_counts (api, active) SELECT NEW.api, 1 WHERE NEW.state IN ('open', 'downloaded', 'verified', 'applied')
        ON CONFLICT (api) DO UPDATE SET active = active + 1;
END;

CREATE TRIGGER session_counts_delete AFTER DELETE ON sessions
WHEN OLD.state IN ('open', 'downloaded', 'verified', 'applied')
BEGIN
    UPDATE session_counts SET active = active - 1 WHERE api = OLD.api;
END;
