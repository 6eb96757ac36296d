package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ecowatt/fota"
)

// activeStates is the SQL list of states in which a session can progress.
var activeStates = fmt.Sprintf("('%s', '%s', '%s', '%s')", fota.SessionOpen, fota.SessionDownloaded, fota.SessionVerified, fota.SessionApplied)

// StaleAfter is how long an active session may go without a request before
// it is abandoned, freeing its place under the concurrent-session cap.
const StaleAfter = 24 * time.Hour

const sessionColumns = `id, device_id, coalesce(release_id, 0), release_version, api, state, reason, next_chunk, total_chunks,
	bytes_served, rollout_id, delta_base, created_ms, updated_ms`

func scanSession(row rowScanner) (*fota.Session, error) {
	s := &fota.Session{}
	var created, updated int64
	if err := row.Scan(&s.ID, &s.DeviceID, &s.ReleaseID, &s.ReleaseVersion, &s.API, &s.State, &s.Reason, &s.NextChunk, &s.TotalChunks,
		&s.BytesServed, &s.RolloutID, &s.DeltaBase, &created, &updated); err != nil {
		return nil, err
	}
	s.Created, s.Updated = fromMS(created), fromMS(updated)
	return s, nil
}

// OpenSession stores a new session, abandoning the device's other active one.
func (s *Store) OpenSession(ctx context.Context, sess *fota.Session, caps fota.SessionCaps) error {
	now := s.now().UTC()
	if sess.API != fota.APINative && sess.API != fota.APIEcoWatt {
		// As in internal/postgres, whose kept counts have these two APIs only.
		return fota.Errorf(fota.EINVALID, "unknown device API %q", sess.API)
	}
	sess.Created, sess.Updated, sess.State = now, now, fota.SessionOpen
	return s.opens.do(ctx, openWrite{ctx: ctx, sess: sess, caps: caps})
}

type openWrite struct {
	ctx  context.Context
	sess *fota.Session
	caps fota.SessionCaps
}

// writeOpens opens a batch of sessions in one transaction (batch.go): when
// a wave opens for thousands of devices, one transaction each queued them
// behind the write lock for seconds. Each open is a savepoint of its own,
// so one refused (a cap reached, a rollout paused meanwhile) leaves the
// others; within a batch they run in order, as they would one by one. An
// open whose caller gave up before its turn is not made.
func (s *Store) writeOpens(batch []openWrite) []error {
	results := make([]error, len(batch))
	err := inTx(context.Background(), s.fast, func(tx *txn) error {
		for i, w := range batch {
			if err := w.ctx.Err(); err != nil {
				results[i] = err
				continue
			}
			// Begun, an open runs to its end: a caller leaving halfway
			// must not fail the batch's transaction.
			ctx := context.WithoutCancel(w.ctx)
			if _, err := tx.Tx.ExecContext(ctx, `SAVEPOINT open_session`); err != nil {
				return err
			}
			results[i] = s.openInTx(ctx, tx, w.sess, w.caps)
			if results[i] != nil {
				if _, err := tx.Tx.ExecContext(ctx, `ROLLBACK TO open_session`); err != nil {
					return err
				}
			}
			if _, err := tx.Tx.ExecContext(ctx, `RELEASE open_session`); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return failAll(len(batch), fmt.Errorf("open session: %w", err))
	}
	return results
}

// openInTx is one open, in the batch's transaction: the write lock is
// held, so opens of one device cannot interleave.
func (s *Store) openInTx(ctx context.Context, tx *txn, sess *fota.Session, caps fota.SessionCaps) error {
	now := sess.Created
	policy, err := allowsInTx(tx.QueryRowContext(ctx, `SELECT api, removed_ms FROM devices WHERE id = ?`, sess.DeviceID), sess)
	if err != nil {
		return err
	}
	var withdrawn int64
	if err := tx.QueryRowContext(ctx, `SELECT withdrawn_ms FROM releases WHERE id = ?`, sess.ReleaseID).Scan(&withdrawn); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("open session: %w", err)
	}
	if withdrawn > 0 {
		return fota.Errorf(fota.EGONE, "%s", fota.WithdrawnReason(sess.ReleaseVersion, ""))
	}
	if sess.RolloutID != 0 {
		if err := checkRolloutOffer(ctx, tx, sess); err != nil {
			return err
		}
	}
	if sess.API == fota.APIEcoWatt {
		var native int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM sessions WHERE device_id = ? AND api = ? AND state IN `+activeStates,
			sess.DeviceID, fota.APINative).Scan(&native); err != nil {
			return fmt.Errorf("open session: %w", err)
		}
		if native > 0 {
			return fota.Errorf(fota.ECONFLICT, "an update is in progress on the native API; the EcoWatt API does not interrupt it")
		}
	}
	if err := s.abandon(ctx, tx, `device_id = ?`, "replaced by a new session", sess.DeviceID); err != nil {
		return err
	}
	// Idle sessions are swept here at most once a minute: the sweep scans
	// every active session, and opening one must stay cheap.
	if last := s.lastSweep.Load(); now.UnixMilli()-last > time.Minute.Milliseconds() && s.lastSweep.CompareAndSwap(last, now.UnixMilli()) {
		if err := s.abandon(ctx, tx, `updated_ms < ?`, "idle too long", ms(now.Add(-StaleAfter))); err != nil {
			return err
		}
	}
	if caps.Total > 0 || caps.OnAPI > 0 {
		// session_counts, kept by triggers (migration 008), already
		// reflects the abandons above: counting the sessions themselves
		// cost an open O(active sessions).
		var total, onAPI int
		if err := tx.QueryRowContext(ctx, `SELECT coalesce(sum(active), 0), coalesce(sum(CASE WHEN api = ? THEN active ELSE 0 END), 0)
			FROM session_counts`, sess.API).Scan(&total, &onAPI); err != nil {
			return fmt.Errorf("count sessions: %w", err)
		}
		if err := fota.CheckSessionCaps(caps, sess.API, total, onAPI); err != nil {
			return err
		}
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO sessions (id, device_id, release_id, release_version, api, state, total_chunks, rollout_id,
		delta_base, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, sess.ID, sess.DeviceID, sess.ReleaseID, sess.ReleaseVersion,
		sess.API, sess.State, sess.TotalChunks, sess.RolloutID, sess.DeltaBase, ms(now), ms(now))
	if err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	if sess.RolloutID != 0 && fota.MemberCounts(sess.API, policy) {
		if _, err := tx.ExecContext(ctx, `UPDATE rollout_members SET state = ?, session_id = ?, offered_ms = ?, reason = '', updated_ms = ?,
			outcome_api = ? WHERE rollout_id = ? AND device_id = ?`, fota.MemberOffered, sess.ID, ms(now), ms(now), sess.API, sess.RolloutID, sess.DeviceID); err != nil {
			return fmt.Errorf("open session: offer to rollout member: %w", err)
		}
	}
	return addEvent(ctx, tx, &fota.Event{Time: now, Kind: fota.EventSessionOpened, DeviceID: sess.DeviceID,
		ReleaseVersion: sess.ReleaseVersion, SessionID: sess.ID, RolloutID: sess.RolloutID, API: sess.API,
		Detail: sessionDetail(sess)})
}

// allowsInTx reads the device's policy (which it returns) and tombstone in the open's
// transaction: a policy narrowed or a removal since the check-in read it
// wins.
func allowsInTx(row *sql.Row, sess *fota.Session) (string, error) {
	var api string
	var removed int64
	err := row.Scan(&api, &removed)
	if errors.Is(err, sql.ErrNoRows) || err == nil && removed > 0 {
		return "", fota.Errorf(fota.ENOTFOUND, "unknown device %q", sess.DeviceID)
	}
	if err != nil {
		return "", fmt.Errorf("open session: %w", err)
	}
	if !(&fota.Device{API: api}).Allows(sess.API) {
		return "", fota.Errorf(fota.EFORBIDDEN, "device %s's API policy (%s) does not allow the %s API", sess.DeviceID, api, sess.API)
	}
	return api, nil
}

// checkRolloutOffer applies fota.CheckRolloutOffer to a session opened for
// a rollout, reading the rollout and the membership in the open's
// transaction: a pause, halt or abort since the check-in read them wins.
func checkRolloutOffer(ctx context.Context, tx *txn, sess *fota.Session) error {
	r := &fota.Rollout{ID: sess.RolloutID}
	var memberWave sql.NullInt64
	var memberState sql.NullString
	err := tx.QueryRowContext(ctx, `SELECT r.state, r.wave, r.reason, coalesce(r.release_id, 0), r.release_version, m.wave, m.state
		FROM rollouts r LEFT JOIN rollout_members m ON m.rollout_id = r.id AND m.device_id = ? WHERE r.id = ?`, sess.DeviceID, sess.RolloutID).
		Scan(&r.State, &r.Wave, &r.Reason, &r.ReleaseID, &r.ReleaseVersion, &memberWave, &memberState)
	if errors.Is(err, sql.ErrNoRows) {
		r = nil
	} else if err != nil {
		return fmt.Errorf("open session: read rollout %d: %w", sess.RolloutID, err)
	}
	var m *fota.RolloutMember
	if memberState.Valid {
		m = &fota.RolloutMember{RolloutID: sess.RolloutID, DeviceID: sess.DeviceID, Wave: int(memberWave.Int64), State: memberState.String}
	}
	return fota.CheckRolloutOffer(sess.RolloutID, r, m, sess.DeviceID, sess.ReleaseID)
}

// moveMember sets the rollout member of a session to state with reason,
// if that session is still the member's and the membership has not ended
// (a superseded or removed device's old session changes nothing).
func moveMember(ctx context.Context, tx *txn, rolloutID int64, deviceID, sessionID, state, reason string, now int64) error {
	if _, err := tx.ExecContext(ctx, `UPDATE rollout_members SET state = ?, reason = ?, updated_ms = ?
		WHERE rollout_id = ? AND device_id = ? AND session_id = ? AND state NOT IN `+endedMembers,
		state, reason, now, rolloutID, deviceID, sessionID); err != nil {
		return fmt.Errorf("move member %s of rollout %d: %w", deviceID, rolloutID, err)
	}
	return nil
}

// abandon ends the active sessions matching where, with an event each,
// and puts their rollout members back to pending.
func (s *Store) abandon(ctx context.Context, tx *txn, where, reason string, args ...any) error {
	now := ms(s.now())
	q := `SELECT id, device_id, release_version, rollout_id, api FROM sessions WHERE state IN ` + activeStates + ` AND ` + where
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("find sessions to abandon: %w", err)
	}
	var ended []*fota.Event
	for rows.Next() {
		e := &fota.Event{Kind: fota.EventAbandoned, Detail: reason, Time: fromMS(now)}
		if err := rows.Scan(&e.SessionID, &e.DeviceID, &e.ReleaseVersion, &e.RolloutID, &e.API); err != nil {
			rows.Close()
			return fmt.Errorf("find sessions to abandon: %w", err)
		}
		ended = append(ended, e)
	}
	rows.Close()
	for _, e := range ended {
		if _, err := tx.ExecContext(ctx, `UPDATE sessions SET state = ?, reason = ?, updated_ms = ? WHERE id = ?`,
			fota.SessionAbandoned, reason, now, e.SessionID); err != nil {
			return fmt.Errorf("abandon session: %w", err)
		}
		if e.RolloutID != 0 {
			if err := moveMember(ctx, tx, e.RolloutID, e.DeviceID, e.SessionID, fota.MemberStateFor(fota.SessionAbandoned), "", now); err != nil {
				return err
			}
		}
		if err := addEvent(ctx, tx, e); err != nil {
			return err
		}
	}
	return nil
}

// ActiveSessionCounts returns how many sessions are active, in all and on
// each API, from the counts the caps read.
func (s *Store) ActiveSessionCounts(ctx context.Context) (total, native, ecowatt int, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT coalesce(sum(active), 0), coalesce(sum(CASE WHEN api = ? THEN active ELSE 0 END), 0),
		coalesce(sum(CASE WHEN api = ? THEN active ELSE 0 END), 0) FROM session_counts`, fota.APINative, fota.APIEcoWatt).Scan(&total, &native, &ecowatt)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("read active session counts: %w", err)
	}
	return total, native, ecowatt, nil
}

// Session returns a session.
func (s *Store) Session(ctx context.Context, id string) (*fota.Session, error) {
	sess, err := scanSession(s.db.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = ?`, id))
	return one(sess, err, fota.Errorf(fota.ENOTFOUND, "no update session %q", id), "session")
}

// ActiveSession returns the device's active session.
func (s *Store) ActiveSession(ctx context.Context, deviceID string) (*fota.Session, error) {
	sess, err := scanSession(s.db.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE device_id = ? AND state IN `+activeStates+
		` ORDER BY created_ms DESC LIMIT 1`, deviceID))
	return one(sess, err, fota.Errorf(fota.ENOTFOUND, "device %q has no open update session; check for updates first", deviceID), "session")
}

// ActiveSessions lists active sessions, newest first.
func (s *Store) ActiveSessions(ctx context.Context) ([]*fota.Session, error) {
	return queryAll(ctx, s.db, "sessions", scanSession,
		`SELECT `+sessionColumns+` FROM sessions WHERE state IN `+activeStates+` ORDER BY created_ms DESC, id`)
}

func (s *Store) activeForUpdate(ctx context.Context, tx *txn, id string) (*fota.Session, error) {
	sess, err := scanSession(tx.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fota.Errorf(fota.ENOTFOUND, "no update session %q", id)
	}
	if err != nil {
		return nil, fmt.Errorf("read session: %w", err)
	}
	if !fota.SessionActive(sess.State) {
		return nil, fota.Errorf(fota.EGONE, "update session %s has ended (%s); check for updates again", id, sess.State)
	}
	return sess, nil
}

// RecordProgress applies a batch of progress in one transaction.
func (s *Store) RecordProgress(ctx context.Context, batch []fota.Progress) error {
	if len(batch) == 0 {
		return nil
	}
	return inTx(ctx, s.fast, func(tx *txn) error {
		read, err := tx.PrepareContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = ?`)
		if err != nil {
			return fmt.Errorf("record progress: %w", err)
		}
		defer read.Close()
		update, err := tx.PrepareContext(ctx, `UPDATE sessions SET next_chunk = ?, bytes_served = bytes_served + ?, updated_ms = ? WHERE id = ?`)
		if err != nil {
			return fmt.Errorf("record progress: %w", err)
		}
		defer update.Close()
		now := s.now()
		for _, p := range batch {
			sess, err := scanSession(read.QueryRowContext(ctx, p.SessionID))
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return fmt.Errorf("record progress of %s: %w", p.SessionID, err)
			}
			if !fota.SessionActive(sess.State) {
				continue
			}
			next := max(sess.NextChunk, min(p.Next, sess.TotalChunks))
			if _, err := update.ExecContext(ctx, next, p.Bytes, ms(now), p.SessionID); err != nil {
				return fmt.Errorf("record progress of %s: %w", p.SessionID, err)
			}
			for _, e := range fota.ProgressEvents(sess, next, now) {
				if err := addEvent(ctx, tx, e); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// SetSessionState applies a state change to an active session.
func (s *Store) SetSessionState(ctx context.Context, id string, ch fota.StateChange) error {
	kind, ok := fota.StateEvent(ch.State)
	if !ok {
		return fota.Errorf(fota.EINVALID, "unknown session state %q", ch.State)
	}
	member, memberReason, err := fota.SessionMemberChange(ch)
	if err != nil {
		return err
	}
	// An outcome (a move to an end) is fsynced (syncWAL, below) before the
	// device hears it was recorded: the device will not say it again.
	// Steps on the way are fast: a device that loses one repeats it.
	err = inTx(ctx, s.fast, func(tx *txn) error {
		sess, err := s.activeForUpdate(ctx, tx, id)
		if err != nil {
			return err
		}
		if !fota.SessionAdvances(sess.State, ch.State) {
			return nil // a repeated or late report changes nothing
		}
		now := s.now()
		if _, err := tx.ExecContext(ctx, `UPDATE sessions SET state = ?, reason = ?, updated_ms = ? WHERE id = ?`, ch.State, ch.Reason, ms(now), id); err != nil {
			return fmt.Errorf("set session state: %w", err)
		}
		if ch.RecordVersion {
			if _, err := tx.ExecContext(ctx, `UPDATE devices SET version = r.version FROM (SELECT version FROM releases WHERE id = ?) AS r
				WHERE devices.id = ?`, sess.ReleaseID, sess.DeviceID); err != nil {
				return fmt.Errorf("record confirmed version: %w", err)
			}
		}
		if ch.RecordCounter {
			if _, err := tx.ExecContext(ctx, `UPDATE devices SET security_counter = max(devices.security_counter, r.security_counter)
				FROM (SELECT security_counter FROM releases WHERE id = ?) AS r WHERE devices.id = ?`, sess.ReleaseID, sess.DeviceID); err != nil {
				return fmt.Errorf("record security counter: %w", err)
			}
		}
		if b := ch.Backoff; b != nil {
			if _, err := tx.ExecContext(ctx, `INSERT INTO backoffs (device_id, release_id, failures, until_ms) VALUES (?, ?, ?, ?)
				ON CONFLICT (device_id, release_id) DO UPDATE SET failures = excluded.failures, until_ms = excluded.until_ms`,
				b.DeviceID, b.ReleaseID, b.Failures, ms(b.Until)); err != nil {
				return fmt.Errorf("record backoff: %w", err)
			}
		}
		// The member rides in this transaction: durable with an outcome.
		if sess.RolloutID != 0 && member != "" {
			if err := moveMember(ctx, tx, sess.RolloutID, sess.DeviceID, id, member, memberReason, ms(now)); err != nil {
				return err
			}
		}
		return addEvent(ctx, tx, &fota.Event{Time: now, Kind: kind, DeviceID: sess.DeviceID, ReleaseVersion: sess.ReleaseVersion,
			SessionID: id, RolloutID: sess.RolloutID, API: sess.API, Detail: ch.Reason})
	})
	if err == nil && !fota.SessionActive(ch.State) {
		err = s.syncWAL()
	}
	return err
}

// sessionDetail is what a session-opened event says: the API, the chunks
// and, for a delta, its base.
func sessionDetail(sess *fota.Session) string {
	if sess.DeltaBase != "" {
		return fmt.Sprintf("%s API, %d chunks of a delta from %.12s", sess.API, sess.TotalChunks, sess.DeltaBase)
	}
	return fmt.Sprintf("%s API, %d chunks", sess.API, sess.TotalChunks)
}
