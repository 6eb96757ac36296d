-- How many sessions are active, for the session caps: an open sums these
-- rows instead of counting every active session, which cost it
-- O(active sessions) however planned (a bitmap scan of them, or a
-- sequential scan of all sessions in the generic plan). The
-- active states are fota.SessionActive's; a new one needs a migration that
-- redefines session_counts_follow.
--
-- Every replica's opens and outcomes change the counts, so one row would
-- make them take turns on its lock until each commits. They are spread
-- over 16 shards, and a transaction's changes all go to the shard of its
-- transaction id: any shard's count may go below zero, the sum is exact.
-- One row per shard holding each API's count means a transaction locks
-- one counter row at most, so no two can deadlock on them (a shard per
-- session, or a row per API, would have an open that replaces a session
-- lock two rows, in either order).
CREATE TABLE session_counts (
    shard   SMALLINT PRIMARY KEY,
    total   BIGINT   NOT NULL,
    native  BIGINT   NOT NULL,
    ecowatt BIGINT   NOT NULL
);

INSERT INTO session_counts (shard, total, native, ecowatt)
    SELECT s, 0, 0, 0 FROM generate_series(0, 15) AS s;
UPDATE session_counts SET total = c.total, native = c.native, ecowatt = c.ecowatt
    FROM (SELECT count(*) AS total, count(*) FILTER (WHERE api = 'native') AS native, count(*) FILTER (WHERE api = 'ecowatt') AS ecowatt
        FROM sessions WHERE state IN ('open', 'downloaded', 'verified', 'applied')) AS c
    WHERE shard = 0;

-- Statement triggers, with the statement's rows as transition tables: a
-- row trigger would update the counter row once per session, and a halt
-- or withdrawal ending 10,000 sessions in one transaction would grow one
-- row's version chain 10,000 long (quadratic: 0.9 s for 10,000 updates of
-- one row in one transaction, 3.8 s for 20,000). Only the net change is
-- written, and none for steps between active states or for progress.
CREATE FUNCTION session_counts_follow() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d_total   BIGINT := 0;
    d_native  BIGINT := 0;
    d_ecowatt BIGINT := 0;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT count(*), count(*) FILTER (WHERE api = 'native'), count(*) FILTER (WHERE api = 'ecowatt')
            INTO d_total, d_native, d_ecowatt
            FROM new_rows WHERE state IN ('open', 'downloaded', 'verified', 'applied');
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        SELECT d_total - count(*), d_native - count(*) FILTER (WHERE api = 'native'), d_ecowatt - count(*) FILTER (WHERE api = 'ecowatt')
            INTO d_total, d_native, d_ecowatt
            FROM old_rows WHERE state IN ('open', 'downloaded', 'verified', 'applied');
    END IF;
    IF d_total <> 0 OR d_native <> 0 OR d_ecowatt <> 0 THEN
        UPDATE session_counts SET total = total + d_total, native = native + d_native, ecowatt = ecowatt + d_ecowatt
            WHERE shard = txid_current() % 16;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER session_counts_insert AFTER INSERT ON sessions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION session_counts_follow();
CREATE TRIGGER session_counts_update AFTER UPDATE ON sessions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION session_counts_follow();
CREATE TRIGGER session_counts_delete AFTER DELETE ON sessions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION session_counts_follow();
