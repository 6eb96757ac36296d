package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/listcache"
)

var _ fota.RolloutStore = (*Store)(nil)

// endedMembers is the SQL list of member states fota.MemberEnded holds for.
var endedMembers = sqlList(fota.MemberSuperseded, fota.MemberRemoved)

// waitingMembers are the member states without an outcome.
var waitingMembers = sqlList(fota.MemberPending, fota.MemberOffered)

// holdingStates is the SQL list of rollout states fota.RolloutHolds holds for.
var holdingStates = func() string {
	var states []string
	for _, st := range fota.RolloutStates {
		if fota.RolloutHolds(st) {
			states = append(states, st)
		}
	}
	return sqlList(states...)
}()

// sqlList quotes constants (never input) as an SQL list.
func sqlList(values ...string) string {
	return "('" + strings.Join(values, "', '") + "')"
}

// rolloutColumns are read from rollouts aliased r.
const rolloutColumns = `r.id, coalesce(r.release_id, 0), r.release_version, r.hardware, r.selector, r.device_ids, r.waves, r.wave_ends,
	r.soak_ms, r.max_failures_percent, r.max_failures, r.min_outcomes, r.silent_timeout_ms, r.windows, r.start_ms, r.state, r.wave,
	r.wave_opened_ms, r.gate_base, r.reason, r.created_ms, r.updated_ms`

// scanRollout scans rolloutColumns, then extra.
func (s *Store) scanRollout(row rowScanner, extra ...any) (*fota.Rollout, error) {
	r := &fota.Rollout{}
	var deviceIDs, waveEnds, windows string
	var soak, silent, start, opened, created, updated int64
	dest := append([]any{&r.ID, &r.ReleaseID, &r.ReleaseVersion, &r.Hardware, &r.Selector, &deviceIDs, &r.Waves, &waveEnds,
		&soak, &r.MaxFailuresPercent, &r.MaxFailures, &r.MinOutcomes, &silent, &windows, &start, &r.State, &r.Wave,
		&opened, &r.GateBase, &r.Reason, &created, &updated}, extra...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	r.Soak, r.SilentTimeout = time.Duration(soak)*time.Millisecond, time.Duration(silent)*time.Millisecond
	r.Start, r.WaveOpened, r.Created, r.Updated = fromMS(start), fromMS(opened), fromMS(created), fromMS(updated)
	err := errors.Join(listcache.Decode(&s.lists, deviceIDs, &r.DeviceIDs), listcache.Decode(&s.lists, waveEnds, &r.WaveEnds),
		listcache.Decode(&s.lists, windows, &r.Windows))
	if err != nil {
		return nil, fmt.Errorf("rollout %d: %w", r.ID, err)
	}
	return r, nil
}

// scanRolloutRef scans a rollout's id and state.
func scanRolloutRef(row rowScanner) (*fota.Rollout, error) {
	r := &fota.Rollout{}
	return r, row.Scan(&r.ID, &r.State)
}

// memberColumns are read from rollout_members aliased m.
const memberColumns = `m.rollout_id, m.device_id, m.wave, m.state, m.reason, m.session_id, m.offered_ms, m.updated_ms`

func memberDest(m *fota.RolloutMember, offered, updated *int64) []any {
	return []any{&m.RolloutID, &m.DeviceID, &m.Wave, &m.State, &m.Reason, &m.SessionID, offered, updated}
}

// CreateRollout stores a rollout and its members, superseding what they
// were members of.
func (s *Store) CreateRollout(ctx context.Context, r *fota.Rollout, members []*fota.RolloutMember, supersede bool) error {
	if err := fota.CheckNewRollout(r, members); err != nil {
		return err
	}
	now := s.now().UTC()
	// One immediate transaction: no other rollout can be created, and no
	// device joined, between the overlap check and the inserts.
	return s.tx(ctx, func(tx *txn) error {
		var hardware string
		var withdrawn int64
		err := tx.QueryRowContext(ctx, `SELECT version, hardware, withdrawn_ms FROM releases WHERE id = ?`, r.ReleaseID).
			Scan(&r.ReleaseVersion, &hardware, &withdrawn)
		if errors.Is(err, sql.ErrNoRows) {
			return fota.Errorf(fota.ENOTFOUND, "no release with id %d", r.ReleaseID)
		}
		if err != nil {
			return fmt.Errorf("create rollout: read release %d: %w", r.ReleaseID, err)
		}
		if withdrawn > 0 {
			return fota.Errorf(fota.EGONE, "%s; it cannot be rolled out", fota.WithdrawnReason(r.ReleaseVersion, ""))
		}
		if r.Hardware == "" {
			r.Hardware = hardware
		}
		if r.Hardware != hardware {
			return fota.Errorf(fota.EINVALID, "release %s is for %s, not %s", r.ReleaseVersion, hardware, r.Hardware)
		}
		r.Created, r.Updated = now, now
		res, err := tx.ExecContext(ctx, `INSERT INTO rollouts (release_id, release_version, hardware, selector, device_ids, waves, wave_ends,
			soak_ms, max_failures_percent, max_failures, min_outcomes, silent_timeout_ms, windows, start_ms, state, wave, wave_opened_ms,
			gate_base, reason, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.ReleaseID, r.ReleaseVersion, r.Hardware, r.Selector, listcache.Encode(r.DeviceIDs), r.Waves, listcache.Encode(r.WaveEnds),
			r.Soak.Milliseconds(), r.MaxFailuresPercent, r.MaxFailures, r.MinOutcomes, r.SilentTimeout.Milliseconds(), listcache.Encode(r.Windows),
			ms(r.Start), r.State, r.Wave, ms(r.WaveOpened), r.GateBase, r.Reason, ms(now), ms(now))
		if err != nil {
			return fmt.Errorf("create rollout: %w", err)
		}
		if r.ID, err = res.LastInsertId(); err != nil {
			return fmt.Errorf("create rollout: %w", err)
		}
		if err := insertMembers(ctx, tx, r, members, now); err != nil {
			return err
		}
		tookOver, err := s.supersede(ctx, tx, r, supersede, now)
		if err != nil {
			return err
		}
		return addEvent(ctx, tx, &fota.Event{Time: now, Kind: fota.EventRolloutCreated, ReleaseVersion: r.ReleaseVersion, RolloutID: r.ID,
			Detail: fota.RolloutCreatedDetail(r, len(members), tookOver)})
	})
}

// insertMembers stores a new rollout's members, each a registered device
// of its hardware.
func insertMembers(ctx context.Context, tx *txn, r *fota.Rollout, members []*fota.RolloutMember, now time.Time) error {
	insert, err := tx.PrepareContext(ctx, `INSERT INTO rollout_members (rollout_id, device_id, wave, state, updated_ms, legacy)
		SELECT ?, id, ?, ?, ?, api = '`+fota.APIEcoWatt+`' FROM devices WHERE id = ? AND hardware = ? AND removed_ms = 0`)
	if err != nil {
		return fmt.Errorf("create rollout: %w", err)
	}
	defer insert.Close()
	for _, m := range members {
		res, err := insert.ExecContext(ctx, r.ID, m.Wave, m.State, ms(now), m.DeviceID, r.Hardware)
		if err != nil {
			return fmt.Errorf("create rollout: add device %s: %w", m.DeviceID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fota.Errorf(fota.EINVALID, "device %s is not a registered %s device", m.DeviceID, r.Hardware)
		}
		m.RolloutID, m.Updated = r.ID, now
	}
	return nil
}

// supersede ends the memberships the new rollout r takes over from other
// rollouts of its hardware: silently where those no longer hold their
// devices, only with supersede where they do (ECONFLICT otherwise). A
// holding rollout left with no live member ends as aborted. It returns
// the holding rollouts it took devices from.
func (s *Store) supersede(ctx context.Context, tx *txn, r *fota.Rollout, supersede bool, now time.Time) ([]fota.RolloutOverlap, error) {
	overlaps, err := queryAll(ctx, tx, "overlapping rollouts", func(row rowScanner) (o fota.RolloutOverlap, err error) {
		return o, row.Scan(&o.RolloutID, &o.ReleaseVersion, &o.State, &o.Devices)
	}, `SELECT o.rollout_id, r.release_version, r.state, count(*) FROM rollout_members n
		JOIN rollout_members o ON o.device_id = n.device_id AND o.rollout_id <> n.rollout_id
		JOIN rollouts r ON r.id = o.rollout_id
		WHERE n.rollout_id = ? AND r.hardware = ? AND o.state NOT IN `+endedMembers+`
		GROUP BY o.rollout_id, r.release_version, r.state ORDER BY o.rollout_id`, r.ID, r.Hardware)
	if err != nil {
		return nil, err
	}
	var holding []fota.RolloutOverlap
	for _, o := range overlaps {
		if fota.RolloutHolds(o.State) {
			holding = append(holding, o)
		}
	}
	if len(holding) > 0 && !supersede {
		return nil, fota.RolloutOverlapConflict(holding)
	}
	for _, o := range overlaps {
		// A rollout that no longer holds its devices keeps its outcomes
		// (its history: who confirmed, who failed); only its members still
		// waiting are taken over.
		which := `state NOT IN ` + endedMembers
		if !fota.RolloutHolds(o.State) {
			which = `state IN ` + waitingMembers
		}
		if _, err := tx.ExecContext(ctx, `UPDATE rollout_members SET state = ?, updated_ms = ? WHERE rollout_id = ? AND `+which+`
			AND device_id IN (SELECT device_id FROM rollout_members WHERE rollout_id = ?)`, fota.MemberSuperseded, ms(now), o.RolloutID, r.ID); err != nil {
			return nil, fmt.Errorf("supersede rollout %d: %w", o.RolloutID, err)
		}
	}
	for _, o := range holding {
		var live int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM rollout_members WHERE rollout_id = ? AND state NOT IN `+endedMembers,
			o.RolloutID).Scan(&live); err != nil {
			return nil, fmt.Errorf("supersede rollout %d: %w", o.RolloutID, err)
		}
		if live > 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE rollouts SET state = ?, reason = ?, updated_ms = ? WHERE id = ?`,
			fota.RolloutAborted, fota.SupersededReason(r.ID), ms(now), o.RolloutID); err != nil {
			return nil, fmt.Errorf("supersede rollout %d: %w", o.RolloutID, err)
		}
		if err := addEvent(ctx, tx, &fota.Event{Time: now, Kind: fota.EventRolloutSuperseded, ReleaseVersion: o.ReleaseVersion,
			RolloutID: o.RolloutID, Detail: fota.SupersededReason(r.ID)}); err != nil {
			return nil, err
		}
	}
	return holding, nil
}

// Rollout returns a rollout.
func (s *Store) Rollout(ctx context.Context, id int64) (*fota.Rollout, error) {
	r, err := s.scanRollout(s.db.QueryRowContext(ctx, `SELECT `+rolloutColumns+` FROM rollouts r WHERE r.id = ?`, id))
	return one(r, err, fota.Errorf(fota.ENOTFOUND, "no rollout %d", id), "rollout")
}

// Rollouts lists rollouts, newest first.
func (s *Store) Rollouts(ctx context.Context) ([]*fota.Rollout, error) {
	return queryAll(ctx, s.db, "rollouts", func(row rowScanner) (*fota.Rollout, error) { return s.scanRollout(row) },
		`SELECT `+rolloutColumns+` FROM rollouts r ORDER BY r.id DESC`)
}

// DeviceRollout returns the device's newest live membership and its
// rollout. Every check-in runs it: one statement, through
// rollout_members_device, newest rollout first, stopping at the first
// membership that has not ended.
func (s *Store) DeviceRollout(ctx context.Context, deviceID string) (*fota.Rollout, *fota.RolloutMember, error) {
	m := &fota.RolloutMember{}
	var offered, updated int64
	r, err := s.scanRollout(s.db.QueryRowContext(ctx, `SELECT `+rolloutColumns+`, `+memberColumns+`
		FROM rollout_members m JOIN rollouts r ON r.id = m.rollout_id
		WHERE m.device_id = ? AND m.state NOT IN `+endedMembers+` ORDER BY m.rollout_id DESC LIMIT 1`, deviceID),
		memberDest(m, &offered, &updated)...)
	if r, err = one(r, err, fota.Errorf(fota.ENOTFOUND, "device %s is in no rollout", deviceID), "device rollout"); err != nil {
		return nil, nil, err
	}
	m.Offered, m.Updated = fromMS(offered), fromMS(updated)
	return r, m, nil
}

// silentSession is the SQL condition (on the member's session s) for an
// offered member past the silent timeout to read silent: an EcoWatt-API
// session only once it was served every chunk, since one unauthenticated
// check-in opens it.
var silentSession = fmt.Sprintf("(s.api IS NULL OR s.api <> '%s' OR s.next_chunk >= s.total_chunks)", fota.APIEcoWatt)

// RolloutMembers lists a rollout's members by wave, then device id.
func (s *Store) RolloutMembers(ctx context.Context, id int64, silentBefore time.Time) ([]*fota.RolloutMember, error) {
	members, err := queryAll(ctx, s.db, "rollout members", func(row rowScanner) (*fota.RolloutMember, error) {
		m := &fota.RolloutMember{}
		var offered, updated int64
		var silent, served bool
		if err := row.Scan(append(memberDest(m, &offered, &updated), &silent, &served)...); err != nil {
			return nil, err
		}
		m.Offered, m.Updated = fromMS(offered), fromMS(updated)
		m.State = fota.MemberReading(m.State, silent, served)
		return m, nil
	}, `SELECT `+memberColumns+`, m.offered_ms < ? AND `+silentSession+`, coalesce(s.next_chunk, 0) > 0
		FROM rollout_members m LEFT JOIN sessions s ON s.id = m.session_id
		WHERE m.rollout_id = ? ORDER BY m.wave, m.device_id`, ms(silentBefore), id)
	if err != nil || len(members) > 0 {
		return members, err
	}
	_, err = s.Rollout(ctx, id) // none: say whether the rollout exists
	return nil, err
}

// RolloutTally counts a rollout's members per wave, with whether each is
// EcoWatt-only and whether an EcoWatt-API session set its state.
func (s *Store) RolloutTally(ctx context.Context, id int64, silentBefore time.Time) ([]fota.WaveTally, error) {
	var waveEnds string
	err := s.db.QueryRowContext(ctx, `SELECT wave_ends FROM rollouts WHERE id = ?`, id).Scan(&waveEnds)
	if _, err = one(waveEnds, err, fota.Errorf(fota.ENOTFOUND, "no rollout %d", id), "rollout"); err != nil {
		return nil, err
	}
	var ends []int
	if err := listcache.Decode(&s.lists, waveEnds, &ends); err != nil {
		return nil, fmt.Errorf("rollout %d: %w", id, err)
	}
	type count struct {
		wave                  int
		state                 string
		silent, served        bool
		legacy, legacyOutcome bool
		outcomeAPI            string
		n                     int
	}
	// Members not offered are counted from rollout_members_tally alone;
	// offered ones are read with their session, for the silent and
	// downloading readings. One statement, so both halves see one moment.
	counts, err := queryAll(ctx, s.db, "rollout tally", func(row rowScanner) (c count, err error) {
		err = row.Scan(&c.wave, &c.state, &c.silent, &c.served, &c.legacy, &c.outcomeAPI, &c.n)
		c.legacyOutcome = fota.LegacyOutcome(c.outcomeAPI, c.legacy)
		return c, err
	}, `SELECT wave, state, 0, 0, legacy, outcome_api, count(*) FROM rollout_members m
		WHERE rollout_id = ? AND state <> ? GROUP BY 1, 2, 5, 6
		UNION ALL
		SELECT m.wave, m.state, m.offered_ms < ? AND `+silentSession+`, coalesce(s.next_chunk, 0) > 0, m.legacy, m.outcome_api, count(*)
		FROM rollout_members m LEFT JOIN sessions s ON s.id = m.session_id
		WHERE m.rollout_id = ? AND m.state = ? GROUP BY 1, 2, 3, 4, 5, 6`,
		id, fota.MemberOffered, ms(silentBefore), id, fota.MemberOffered)
	if err != nil {
		return nil, err
	}
	waves := len(ends)
	for _, c := range counts {
		waves = max(waves, c.wave) // a device joined into a wave past the spec's
	}
	tally := make([]fota.WaveTally, waves)
	for i := range tally {
		tally[i].Wave = i + 1
	}
	for _, c := range counts {
		if c.wave >= 1 {
			tally[c.wave-1].Add(fota.MemberReading(c.state, c.silent, c.served), c.n, c.legacy, c.legacyOutcome)
		}
	}
	return tally, nil
}

// JoinRollout adds a device to a rollout unless something holds it.
func (s *Store) JoinRollout(ctx context.Context, m *fota.RolloutMember) (bool, error) {
	joined := false
	now := s.now().UTC()
	err := s.tx(ctx, func(tx *txn) error {
		var hardware, waveEnds string
		err := tx.QueryRowContext(ctx, `SELECT hardware, wave_ends FROM rollouts WHERE id = ?`, m.RolloutID).Scan(&hardware, &waveEnds)
		if _, err = one(hardware, err, fota.Errorf(fota.ENOTFOUND, "no rollout %d", m.RolloutID), "rollout"); err != nil {
			return err
		}
		var ends []int
		if err := listcache.Decode(&s.lists, waveEnds, &ends); err != nil {
			return fmt.Errorf("rollout %d: %w", m.RolloutID, err)
		}
		if err := fota.CheckJoin(m, len(ends)); err != nil {
			return err
		}
		var deviceHardware string
		var removed int64
		err = tx.QueryRowContext(ctx, `SELECT hardware, removed_ms FROM devices WHERE id = ?`, m.DeviceID).Scan(&deviceHardware, &removed)
		if errors.Is(err, sql.ErrNoRows) || err == nil && removed > 0 {
			return fota.Errorf(fota.ENOTFOUND, "unknown device %q", m.DeviceID)
		}
		if err != nil {
			return fmt.Errorf("join rollout %d: %w", m.RolloutID, err)
		}
		if deviceHardware != hardware {
			return fota.Errorf(fota.EINVALID, "device %s is %s hardware; rollout %d is for %s", m.DeviceID, deviceHardware, m.RolloutID, hardware)
		}
		var held int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM rollout_members m JOIN rollouts r ON r.id = m.rollout_id
			WHERE m.device_id = ? AND (m.rollout_id = ? OR r.hardware = ? AND r.state IN `+holdingStates+` AND m.state NOT IN `+endedMembers+`)`,
			m.DeviceID, m.RolloutID, hardware).Scan(&held); err != nil {
			return fmt.Errorf("join rollout %d: %w", m.RolloutID, err)
		}
		if held > 0 {
			return nil
		}
		// What is left are memberships in rollouts that no longer hold:
		// those still waiting are superseded silently, as CreateRollout does.
		if _, err := tx.ExecContext(ctx, `UPDATE rollout_members SET state = ?, updated_ms = ? WHERE device_id = ? AND state IN `+waitingMembers+`
			AND rollout_id IN (SELECT id FROM rollouts WHERE hardware = ?)`, fota.MemberSuperseded, ms(now), m.DeviceID, hardware); err != nil {
			return fmt.Errorf("join rollout %d: %w", m.RolloutID, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO rollout_members (rollout_id, device_id, wave, state, updated_ms, legacy)
			SELECT ?, id, ?, ?, ?, api = ? FROM devices WHERE id = ?`, m.RolloutID, m.Wave, m.State, ms(now), fota.APIEcoWatt, m.DeviceID); err != nil {
			return fmt.Errorf("join rollout %d: %w", m.RolloutID, err)
		}
		m.Reason, m.SessionID, m.Offered, m.Updated = "", "", time.Time{}, now
		joined = true
		return nil
	})
	return joined && err == nil, err
}

// TransitionRollout moves a rollout if it is still where t saw it.
func (s *Store) TransitionRollout(ctx context.Context, id int64, t fota.RolloutTransition) ([]*fota.Session, error) {
	if err := t.Check(); err != nil {
		return nil, err
	}
	var ended []*fota.Session
	err := s.tx(ctx, func(tx *txn) error {
		now := s.now()
		// The compare-and-set: only from the position the caller saw.
		res, err := tx.ExecContext(ctx, `UPDATE rollouts SET state = ?, wave = ?, reason = ?, gate_base = ?, updated_ms = ?,
			wave_opened_ms = CASE WHEN ? THEN ? ELSE wave_opened_ms END WHERE id = ? AND state = ? AND wave = ?`,
			t.State, t.Wave, t.Reason, t.GateBase, ms(now), t.OpensWave(), ms(now), id, t.FromState, t.FromWave)
		if err != nil {
			return fmt.Errorf("transition rollout %d: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var state string
			var wave int
			err := tx.QueryRowContext(ctx, `SELECT state, wave FROM rollouts WHERE id = ?`, id).Scan(&state, &wave)
			if _, err = one(state, err, fota.Errorf(fota.ENOTFOUND, "no rollout %d", id), "rollout"); err != nil {
				return err
			}
			return fota.Errorf(fota.ECONFLICT, "rollout %d moved: it is %s at wave %d, not %s at wave %d", id, state, wave, t.FromState, t.FromWave)
		}
		var version string
		if err := tx.QueryRowContext(ctx, `SELECT release_version FROM rollouts WHERE id = ?`, id).Scan(&version); err != nil {
			return fmt.Errorf("transition rollout %d: %w", id, err)
		}
		if t.AcceptFailures {
			if _, err := tx.ExecContext(ctx, `UPDATE rollout_members SET state = ?, updated_ms = ? WHERE rollout_id = ? AND state = ?`,
				fota.MemberAccepted, ms(now), id, fota.MemberFailed); err != nil {
				return fmt.Errorf("transition rollout %d: accept failures: %w", id, err)
			}
		}
		if t.EndSessions {
			// Not the sessions already installing (applied): their devices are
			// rebooting into the release and still report how it went.
			if ended, err = queryAll(ctx, tx, "sessions", scanSession, `SELECT `+sessionColumns+` FROM sessions
				WHERE rollout_id = ? AND state <> ? AND state IN `+activeStates, id, fota.SessionApplied); err != nil {
				return err
			}
			reason := t.Reason
			if reason == "" {
				reason = fmt.Sprintf("rollout %d is %s", id, t.State)
			}
			if err := s.abandon(ctx, tx, `rollout_id = ? AND state <> ?`, reason, id, fota.SessionApplied); err != nil {
				return err
			}
		}
		return addEvent(ctx, tx, &fota.Event{Time: now, Kind: t.Event, ReleaseVersion: version, RolloutID: id, Detail: t.Detail})
	})
	return ended, err
}

// abortRolloutsOf ends the rollouts of a withdrawn release that still hold
// their devices, with an event each.
func abortRolloutsOf(ctx context.Context, tx *txn, releaseID int64, version, reason string, now time.Time) error {
	ids, err := queryAll(ctx, tx, "rollouts", func(row rowScanner) (id int64, err error) { return id, row.Scan(&id) },
		`SELECT id FROM rollouts WHERE release_id = ? AND state IN `+holdingStates+` ORDER BY id`, releaseID)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `UPDATE rollouts SET state = ?, reason = ?, updated_ms = ? WHERE id = ?`,
			fota.RolloutAborted, reason, ms(now), id); err != nil {
			return fmt.Errorf("abort rollout %d: %w", id, err)
		}
		if err := addEvent(ctx, tx, &fota.Event{Time: now, Kind: fota.EventRolloutAborted, ReleaseVersion: version, RolloutID: id,
			Detail: reason}); err != nil {
			return err
		}
	}
	return nil
}
