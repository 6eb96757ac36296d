package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecowatt/fota"
)

// activeStates are the states in which a session can progress.
var activeStates = []string{fota.SessionOpen, fota.SessionDownloaded, fota.SessionVerified, fota.SessionApplied}

// StaleAfter is how long an active session may go without a request before
// it is abandoned.
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

// OpenSession stores a new session, abandoning the device's other active
// one and (at most once a minute) sessions idle past StaleAfter.
func (s *Store) OpenSession(ctx context.Context, sess *fota.Session, caps fota.SessionCaps) error {
	now := s.now().UTC()
	if sess.API != fota.APINative && sess.API != fota.APIEcoWatt {
		// session_counts has a column for each of these two only.
		return fota.Errorf(fota.EINVALID, "unknown device API %q", sess.API)
	}
	sess.Created, sess.Updated, sess.State = now, now, fota.SessionOpen
	return s.fastTx(ctx, func(tx pgx.Tx) error {
		// The device's row lock serializes opens of one device across
		// replicas: a native session opened meanwhile is seen below.
		// Its policy is read here too: one narrowed since the check-in read it wins.
		var api string
		var removed int64
		if err := tx.QueryRow(ctx, `SELECT api, removed_ms FROM devices WHERE id = $1 FOR UPDATE`, sess.DeviceID).Scan(&api, &removed); err != nil || removed > 0 {
			if err == nil || errors.Is(err, pgx.ErrNoRows) {
				return fota.Errorf(fota.ENOTFOUND, "unknown device %q", sess.DeviceID)
			}
			return fmt.Errorf("open session: %w", err)
		}
		// FOR SHARE: a withdrawal waits for this open to commit and then
		// ends the session, or this waits for the withdrawal and sees it.
		var withdrawn int64
		if err := tx.QueryRow(ctx, `SELECT withdrawn_ms FROM releases WHERE id = $1 FOR SHARE`, sess.ReleaseID).Scan(&withdrawn); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("open session: %w", err)
		}
		if withdrawn > 0 {
			return fota.Errorf(fota.EGONE, "%s", fota.WithdrawnReason(sess.ReleaseVersion, ""))
		}
		if !(&fota.Device{API: api}).Allows(sess.API) {
			return fota.Errorf(fota.EFORBIDDEN, "device %s's API policy (%s) does not allow the %s API", sess.DeviceID, api, sess.API)
		}
		if sess.RolloutID != 0 {
			if err := checkRolloutOffer(ctx, tx, sess); err != nil {
				return err
			}
		}
		if sess.API == fota.APIEcoWatt {
			var native int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM sessions WHERE device_id = $1 AND api = $2 AND state = ANY($3)`,
				sess.DeviceID, fota.APINative, activeStates).Scan(&native); err != nil {
				return fmt.Errorf("open session: %w", err)
			}
			if native > 0 {
				return fota.Errorf(fota.ECONFLICT, "an update is in progress on the native API; the EcoWatt API does not interrupt it")
			}
		}
		if err := s.abandon(ctx, tx, `device_id = $4`, "replaced by a new session", sess.DeviceID); err != nil {
			return err
		}
		// Idle sessions are swept here at most once a minute (per replica):
		// with the device's abandon in one statement (device_id = $4 OR
		// updated_ms < $5), the statement's generic plan, which a cached
		// prepared statement may run, scanned every session at every open.
		if last := s.lastSweep.Load(); now.UnixMilli()-last > time.Minute.Milliseconds() && s.lastSweep.CompareAndSwap(last, now.UnixMilli()) {
			if err := s.abandon(ctx, tx, `updated_ms < $4`, "idle too long", ms(now.Add(-StaleAfter))); err != nil {
				return err
			}
		}
		if caps.Total > 0 || caps.OnAPI > 0 {
			// session_counts, kept by triggers (migration 009), already
			// reflects the abandons above: counting the sessions themselves
			// cost an open O(active sessions).
			total, native, ecowatt, err := activeCounts(ctx, tx)
			if err != nil {
				return fmt.Errorf("open session: %w", err)
			}
			onAPI := map[string]int{fota.APINative: native, fota.APIEcoWatt: ecowatt}[sess.API]
			if err := fota.CheckSessionCaps(caps, sess.API, total, onAPI); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO sessions (id, device_id, release_id, release_version, api, state, total_chunks, rollout_id,
			delta_base, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`, sess.ID, sess.DeviceID, sess.ReleaseID,
			sess.ReleaseVersion, sess.API, sess.State, sess.TotalChunks, sess.RolloutID, sess.DeltaBase, ms(now), ms(now))
		if err != nil {
			return fmt.Errorf("open session: %w", err)
		}
		if sess.RolloutID != 0 && fota.MemberCounts(sess.API, api) {
			if _, err := tx.Exec(ctx, `UPDATE rollout_members SET state = $1, session_id = $2, offered_ms = $3, reason = '', updated_ms = $3,
				outcome_api = $6 WHERE rollout_id = $4 AND device_id = $5`, fota.MemberOffered, sess.ID, ms(now), sess.RolloutID, sess.DeviceID, sess.API); err != nil {
				return fmt.Errorf("open session: offer to rollout member: %w", err)
			}
		}
		return addEvent(ctx, tx, &fota.Event{Time: now, Kind: fota.EventSessionOpened, DeviceID: sess.DeviceID,
			ReleaseVersion: sess.ReleaseVersion, SessionID: sess.ID, RolloutID: sess.RolloutID, API: sess.API,
			Detail: sessionDetail(sess)})
	})
}

// activeCounts sums the shards of session_counts.
func activeCounts(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (total, native, ecowatt int, err error) {
	err = q.QueryRow(ctx, `SELECT coalesce(sum(total), 0), coalesce(sum(native), 0), coalesce(sum(ecowatt), 0) FROM session_counts`).
		Scan(&total, &native, &ecowatt)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("read active session counts: %w", err)
	}
	return total, native, ecowatt, nil
}

// ActiveSessionCounts returns how many sessions are active, in all and on
// each API, from the counts the caps read.
func (s *Store) ActiveSessionCounts(ctx context.Context) (total, native, ecowatt int, err error) {
	return activeCounts(ctx, s.pool)
}

// checkRolloutOffer applies fota.CheckRolloutOffer to a session opened for
// a rollout, reading the rollout and the membership in the open's
// transaction. FOR SHARE: a transition (a pause, halt or abort) waits for
// this open to commit and then ends the session, or this waits for the
// transition and sees it.
func checkRolloutOffer(ctx context.Context, tx pgx.Tx, sess *fota.Session) error {
	r := &fota.Rollout{ID: sess.RolloutID}
	var memberWave *int
	var memberState *string
	err := tx.QueryRow(ctx, `SELECT r.state, r.wave, r.reason, coalesce(r.release_id, 0), r.release_version, m.wave, m.state
		FROM rollouts r LEFT JOIN rollout_members m ON m.rollout_id = r.id AND m.device_id = $1 WHERE r.id = $2 FOR SHARE OF r`,
		sess.DeviceID, sess.RolloutID).Scan(&r.State, &r.Wave, &r.Reason, &r.ReleaseID, &r.ReleaseVersion, &memberWave, &memberState)
	if errors.Is(err, pgx.ErrNoRows) {
		r = nil
	} else if err != nil {
		return fmt.Errorf("open session: read rollout %d: %w", sess.RolloutID, err)
	}
	var m *fota.RolloutMember
	if memberState != nil {
		m = &fota.RolloutMember{RolloutID: sess.RolloutID, DeviceID: sess.DeviceID, Wave: *memberWave, State: *memberState}
	}
	return fota.CheckRolloutOffer(sess.RolloutID, r, m, sess.DeviceID, sess.ReleaseID)
}

// moveMember sets the rollout member of a session to state with reason,
// if that session is still the member's and the membership has not ended
// (a superseded or removed device's old session changes nothing).
func moveMember(ctx context.Context, tx pgx.Tx, rolloutID int64, deviceID, sessionID, state, reason string, now int64) error {
	if _, err := tx.Exec(ctx, `UPDATE rollout_members SET state = $1, reason = $2, updated_ms = $3
		WHERE rollout_id = $4 AND device_id = $5 AND session_id = $6 AND NOT (state = ANY($7))`,
		state, reason, now, rolloutID, deviceID, sessionID, endedMembers); err != nil {
		return fmt.Errorf("move member %s of rollout %d: %w", deviceID, rolloutID, err)
	}
	return nil
}

// abandon ends the active sessions matching where, with an event each,
// and puts their rollout members back to pending. In where, $4 onwards are
// args ($1 to $3 are the states, reason and time).
func (s *Store) abandon(ctx context.Context, tx pgx.Tx, where, reason string, args ...any) error {
	now := s.now()
	rows, err := tx.Query(ctx, `UPDATE sessions SET state = '`+fota.SessionAbandoned+`', reason = $2, updated_ms = $3
		WHERE state = ANY($1) AND `+where+` RETURNING id, device_id, release_version, rollout_id, api`, append([]any{activeStates, reason, ms(now)}, args...)...)
	if err != nil {
		return fmt.Errorf("abandon sessions: %w", err)
	}
	var ended []*fota.Event
	for rows.Next() {
		e := &fota.Event{Kind: fota.EventAbandoned, Detail: reason, Time: now}
		if err := rows.Scan(&e.SessionID, &e.DeviceID, &e.ReleaseVersion, &e.RolloutID, &e.API); err != nil {
			rows.Close()
			return fmt.Errorf("abandon sessions: %w", err)
		}
		ended = append(ended, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("abandon sessions: %w", err)
	}
	for _, e := range ended {
		if e.RolloutID != 0 {
			if err := moveMember(ctx, tx, e.RolloutID, e.DeviceID, e.SessionID, fota.MemberStateFor(fota.SessionAbandoned), "", ms(now)); err != nil {
				return err
			}
		}
		if err := addEvent(ctx, tx, e); err != nil {
			return err
		}
	}
	return nil
}

// Session returns a session.
func (s *Store) Session(ctx context.Context, id string) (*fota.Session, error) {
	sess, err := scanSession(s.pool.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = $1`, id))
	return one(sess, err, fota.Errorf(fota.ENOTFOUND, "no update session %q", id), "session")
}

// ActiveSession returns the device's active session.
func (s *Store) ActiveSession(ctx context.Context, deviceID string) (*fota.Session, error) {
	sess, err := scanSession(s.pool.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE device_id = $1 AND state = ANY($2)
		ORDER BY created_ms DESC LIMIT 1`, deviceID, activeStates))
	return one(sess, err, fota.Errorf(fota.ENOTFOUND, "device %q has no open update session; check for updates first", deviceID), "session")
}

// ActiveSessions lists active sessions, newest first.
func (s *Store) ActiveSessions(ctx context.Context) ([]*fota.Session, error) {
	return queryAll(ctx, s.pool, "sessions", scanSession,
		`SELECT `+sessionColumns+` FROM sessions WHERE state = ANY($1) ORDER BY created_ms DESC, id`, activeStates)
}

// activeForUpdate locks an active session's row for the transaction, so
// replicas updating one session take turns.
func (s *Store) activeForUpdate(ctx context.Context, tx pgx.Tx, id string) (*fota.Session, error) {
	sess, err := scanSession(tx.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = $1 FOR UPDATE`, id))
	if sess, err = one(sess, err, fota.Errorf(fota.ENOTFOUND, "no update session %q", id), "session"); err != nil {
		return nil, err
	}
	if !fota.SessionActive(sess.State) {
		return nil, fota.Errorf(fota.EGONE, "update session %s has ended (%s); check for updates again", id, sess.State)
	}
	return sess, nil
}

// RecordProgress applies a batch of progress in one transaction: the
// active sessions are locked in id order (two replicas flushing at once
// cannot deadlock), raised in Go, written back in one statement.
func (s *Store) RecordProgress(ctx context.Context, batch []fota.Progress) error {
	if len(batch) == 0 {
		return nil
	}
	ids := make([]string, len(batch))
	byID := make(map[string]fota.Progress, len(batch))
	for i, p := range batch {
		ids[i] = p.SessionID
		if prev, ok := byID[p.SessionID]; ok {
			p.Next, p.Bytes = max(p.Next, prev.Next), p.Bytes+prev.Bytes
		}
		byID[p.SessionID] = p
	}
	return s.fastTx(ctx, func(tx pgx.Tx) error {
		sessions, err := queryAll(ctx, tx, "sessions", scanSession, `SELECT `+sessionColumns+` FROM sessions
			WHERE id = ANY($1) AND state = ANY($2) ORDER BY id FOR UPDATE`, ids, activeStates)
		if err != nil {
			return fmt.Errorf("record progress: %w", err)
		}
		now := s.now()
		var upIDs []string
		var upNext []int64
		var upBytes []int64
		var events []*fota.Event
		for _, sess := range sessions {
			p := byID[sess.ID]
			next := max(sess.NextChunk, min(p.Next, sess.TotalChunks))
			upIDs, upNext, upBytes = append(upIDs, sess.ID), append(upNext, int64(next)), append(upBytes, p.Bytes)
			events = append(events, fota.ProgressEvents(sess, next, now)...)
		}
		if len(upIDs) > 0 {
			if _, err := tx.Exec(ctx, `UPDATE sessions AS s SET next_chunk = u.next, bytes_served = s.bytes_served + u.bytes, updated_ms = $4
				FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(id, next, bytes) WHERE s.id = u.id`,
				upIDs, upNext, upBytes, ms(now)); err != nil {
				return fmt.Errorf("record progress: %w", err)
			}
		}
		for _, e := range events {
			if err := addEvent(ctx, tx, e); err != nil {
				return err
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
	// An outcome (a move to an end) waits for the WAL flush before the
	// device hears it was recorded: the device will not say it again.
	// Steps on the way are fast: a device that loses one repeats it.
	inTx := s.fastTx
	if !fota.SessionActive(ch.State) {
		inTx = s.tx
	}
	return inTx(ctx, func(tx pgx.Tx) error {
		sess, err := s.activeForUpdate(ctx, tx, id)
		if err != nil {
			return err
		}
		if !fota.SessionAdvances(sess.State, ch.State) {
			return nil // a repeated or late report changes nothing
		}
		now := s.now()
		if _, err := tx.Exec(ctx, `UPDATE sessions SET state = $1, reason = $2, updated_ms = $3 WHERE id = $4`, ch.State, ch.Reason, ms(now), id); err != nil {
			return fmt.Errorf("set session state: %w", err)
		}
		if ch.RecordVersion {
			if _, err := tx.Exec(ctx, `UPDATE devices SET version = r.version FROM releases r WHERE r.id = $1 AND devices.id = $2`,
				sess.ReleaseID, sess.DeviceID); err != nil {
				return fmt.Errorf("record confirmed version: %w", err)
			}
		}
		if ch.RecordCounter {
			if _, err := tx.Exec(ctx, `UPDATE devices SET security_counter = GREATEST(devices.security_counter, r.security_counter)
				FROM releases r WHERE r.id = $1 AND devices.id = $2`, sess.ReleaseID, sess.DeviceID); err != nil {
				return fmt.Errorf("record security counter: %w", err)
			}
		}
		if b := ch.Backoff; b != nil {
			if _, err := tx.Exec(ctx, `INSERT INTO backoffs (device_id, release_id, failures, until_ms) VALUES ($1, $2, $3, $4)
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
}

// sessionDetail is what a session-opened event says: the API, the chunks
// and, for a delta, its base.
func sessionDetail(sess *fota.Session) string {
	if sess.DeltaBase != "" {
		return fmt.Sprintf("%s API, %d chunks of a delta from %.12s", sess.API, sess.TotalChunks, sess.DeltaBase)
	}
	return fmt.Sprintf("%s API, %d chunks", sess.API, sess.TotalChunks)
}
