package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/listcache"
)

var _ fota.RolloutStore = (*Store)(nil)

// rolloutLock is the advisory lock key CreateRollout and JoinRollout take
// for their transaction: replicas creating overlapping rollouts, or joining
// a device while another rollout takes it, take turns, so the overlap
// check sees what the other committed.
const rolloutLock = 0x666f7472 // "fotr"

// endedMembers are the member states fota.MemberEnded holds for.
var endedMembers = []string{fota.MemberSuperseded, fota.MemberRemoved}

// waitingMembers are the member states without an outcome.
var waitingMembers = []string{fota.MemberPending, fota.MemberOffered}

// holdingStates are the rollout states fota.RolloutHolds holds for.
var holdingStates = func() []string {
	var states []string
	for _, st := range fota.RolloutStates {
		if fota.RolloutHolds(st) {
			states = append(states, st)
		}
	}
	return states
}()

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
	return s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, rolloutLock); err != nil {
			return fmt.Errorf("create rollout: lock: %w", err)
		}
		// FOR SHARE: a withdrawal or deletion of the release waits for this
		// rollout to commit (and then aborts it, or refuses), or this waits
		// and sees it.
		var hardware string
		var withdrawn int64
		err := tx.QueryRow(ctx, `SELECT version, hardware, withdrawn_ms FROM releases WHERE id = $1 FOR SHARE`, r.ReleaseID).
			Scan(&r.ReleaseVersion, &hardware, &withdrawn)
		if errors.Is(err, pgx.ErrNoRows) {
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
		err = tx.QueryRow(ctx, `INSERT INTO rollouts (release_id, release_version, hardware, selector, device_ids, waves, wave_ends,
			soak_ms, max_failures_percent, max_failures, min_outcomes, silent_timeout_ms, windows, start_ms, state, wave, wave_opened_ms,
			gate_base, reason, created_ms, updated_ms)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $20) RETURNING id`,
			r.ReleaseID, r.ReleaseVersion, r.Hardware, r.Selector, listcache.Encode(r.DeviceIDs), r.Waves, listcache.Encode(r.WaveEnds),
			r.Soak.Milliseconds(), r.MaxFailuresPercent, r.MaxFailures, r.MinOutcomes, r.SilentTimeout.Milliseconds(), listcache.Encode(r.Windows),
			ms(r.Start), r.State, r.Wave, ms(r.WaveOpened), r.GateBase, r.Reason, ms(now)).Scan(&r.ID)
		if err != nil {
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

// insertMembers stores a new rollout's members in one statement, each a
// registered device of its hardware.
func insertMembers(ctx context.Context, tx pgx.Tx, r *fota.Rollout, members []*fota.RolloutMember, now time.Time) error {
	if len(members) == 0 {
		return nil
	}
	ids, waves, states := make([]string, len(members)), make([]int64, len(members)), make([]string, len(members))
	for i, m := range members {
		ids[i], waves[i], states[i] = m.DeviceID, int64(m.Wave), m.State
	}
	tag, err := tx.Exec(ctx, `INSERT INTO rollout_members (rollout_id, device_id, wave, state, updated_ms, legacy)
		SELECT $1, d.id, u.wave, u.state, $2, d.api = $7 FROM unnest($3::text[], $4::bigint[], $5::text[]) AS u(device_id, wave, state)
		JOIN devices d ON d.id = u.device_id AND d.hardware = $6 AND d.removed_ms = 0`, r.ID, ms(now), ids, waves, states, r.Hardware, fota.APIEcoWatt)
	if err != nil {
		return fmt.Errorf("create rollout: add devices: %w", err)
	}
	if tag.RowsAffected() != int64(len(members)) {
		var missing string
		if err := tx.QueryRow(ctx, `SELECT u.id FROM unnest($1::text[]) WITH ORDINALITY AS u(id, n)
			WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = u.id AND d.hardware = $2 AND d.removed_ms = 0) ORDER BY n LIMIT 1`,
			ids, r.Hardware).Scan(&missing); err != nil {
			return fmt.Errorf("create rollout: find the device not added: %w", err)
		}
		return fota.Errorf(fota.EINVALID, "device %s is not a registered %s device", missing, r.Hardware)
	}
	for _, m := range members {
		m.RolloutID, m.Updated = r.ID, now
	}
	return nil
}

// supersede ends the memberships the new rollout r takes over from other
// rollouts of its hardware: silently where those no longer hold their
// devices, only with supersede where they do (ECONFLICT otherwise). A
// holding rollout left with no live member ends as aborted. It returns
// the holding rollouts it took devices from.
func (s *Store) supersede(ctx context.Context, tx pgx.Tx, r *fota.Rollout, supersede bool, now time.Time) ([]fota.RolloutOverlap, error) {
	// Lock the rollouts it overlaps first, in id order, then read their
	// states: an OpenSession holding one FOR SHARE commits before this
	// supersedes its members, and a transition of one cannot slip between
	// the check and the superseding.
	if _, err := tx.Exec(ctx, `SELECT id FROM rollouts WHERE id IN (SELECT o.rollout_id FROM rollout_members n
		JOIN rollout_members o ON o.device_id = n.device_id AND o.rollout_id <> n.rollout_id
		WHERE n.rollout_id = $1 AND NOT (o.state = ANY($2))) AND hardware = $3 ORDER BY id FOR UPDATE`, r.ID, endedMembers, r.Hardware); err != nil {
		return nil, fmt.Errorf("lock overlapping rollouts: %w", err)
	}
	overlaps, err := queryAll(ctx, tx, "overlapping rollouts", func(row rowScanner) (o fota.RolloutOverlap, err error) {
		return o, row.Scan(&o.RolloutID, &o.ReleaseVersion, &o.State, &o.Devices)
	}, `SELECT o.rollout_id, r.release_version, r.state, count(*) FROM rollout_members n
		JOIN rollout_members o ON o.device_id = n.device_id AND o.rollout_id <> n.rollout_id
		JOIN rollouts r ON r.id = o.rollout_id
		WHERE n.rollout_id = $1 AND r.hardware = $2 AND NOT (o.state = ANY($3))
		GROUP BY o.rollout_id, r.release_version, r.state ORDER BY o.rollout_id`, r.ID, r.Hardware, endedMembers)
	if err != nil {
		return nil, err
	}
	var holding []fota.RolloutOverlap
	var ids, ended []int64
	for _, o := range overlaps {
		if fota.RolloutHolds(o.State) {
			holding = append(holding, o)
			ids = append(ids, o.RolloutID)
		} else {
			ended = append(ended, o.RolloutID)
		}
	}
	if len(holding) > 0 && !supersede {
		return nil, fota.RolloutOverlapConflict(holding)
	}
	if len(ids) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE rollout_members SET state = $1, updated_ms = $2 WHERE rollout_id = ANY($3) AND NOT (state = ANY($4))
			AND device_id IN (SELECT device_id FROM rollout_members WHERE rollout_id = $5)`, fota.MemberSuperseded, ms(now), ids, endedMembers, r.ID); err != nil {
			return nil, fmt.Errorf("supersede rollouts %v: %w", ids, err)
		}
	}
	// A rollout that no longer holds its devices keeps its outcomes (its
	// history: who confirmed, who failed); only its members still waiting
	// are taken over.
	if len(ended) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE rollout_members SET state = $1, updated_ms = $2 WHERE rollout_id = ANY($3) AND state = ANY($4)
			AND device_id IN (SELECT device_id FROM rollout_members WHERE rollout_id = $5)`, fota.MemberSuperseded, ms(now), ended, waitingMembers, r.ID); err != nil {
			return nil, fmt.Errorf("supersede rollouts %v: %w", ended, err)
		}
	}
	for _, o := range holding {
		var live bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM rollout_members WHERE rollout_id = $1 AND NOT (state = ANY($2)))`,
			o.RolloutID, endedMembers).Scan(&live); err != nil {
			return nil, fmt.Errorf("supersede rollout %d: %w", o.RolloutID, err)
		}
		if live {
			continue
		}
		if _, err := tx.Exec(ctx, `UPDATE rollouts SET state = $1, reason = $2, updated_ms = $3 WHERE id = $4`,
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
	r, err := s.scanRollout(s.pool.QueryRow(ctx, `SELECT `+rolloutColumns+` FROM rollouts r WHERE r.id = $1`, id))
	return one(r, err, fota.Errorf(fota.ENOTFOUND, "no rollout %d", id), "rollout")
}

// Rollouts lists rollouts, newest first.
func (s *Store) Rollouts(ctx context.Context) ([]*fota.Rollout, error) {
	return queryAll(ctx, s.pool, "rollouts", func(row rowScanner) (*fota.Rollout, error) { return s.scanRollout(row) },
		`SELECT `+rolloutColumns+` FROM rollouts r ORDER BY r.id DESC`)
}

// DeviceRollout returns the device's newest live membership and its
// rollout. Every check-in runs it: one statement, through
// rollout_members_device, newest rollout first.
func (s *Store) DeviceRollout(ctx context.Context, deviceID string) (*fota.Rollout, *fota.RolloutMember, error) {
	m := &fota.RolloutMember{}
	var offered, updated int64
	r, err := s.scanRollout(s.pool.QueryRow(ctx, `SELECT `+rolloutColumns+`, `+memberColumns+`
		FROM rollout_members m JOIN rollouts r ON r.id = m.rollout_id
		WHERE m.device_id = $1 AND NOT (m.state = ANY($2)) ORDER BY m.rollout_id DESC LIMIT 1`, deviceID, endedMembers),
		memberDest(m, &offered, &updated)...)
	if r, err = one(r, err, fota.Errorf(fota.ENOTFOUND, "device %s is in no rollout", deviceID), "device rollout"); err != nil {
		return nil, nil, err
	}
	m.Offered, m.Updated = fromMS(offered), fromMS(updated)
	return r, m, nil
}

// RolloutMembers lists a rollout's members by wave, then device id.
func (s *Store) RolloutMembers(ctx context.Context, id int64, silentBefore time.Time) ([]*fota.RolloutMember, error) {
	members, err := queryAll(ctx, s.pool, "rollout members", func(row rowScanner) (*fota.RolloutMember, error) {
		m := &fota.RolloutMember{}
		var offered, updated int64
		var silent, served bool
		if err := row.Scan(append(memberDest(m, &offered, &updated), &silent, &served)...); err != nil {
			return nil, err
		}
		m.Offered, m.Updated = fromMS(offered), fromMS(updated)
		m.State = fota.MemberReading(m.State, silent, served)
		return m, nil
	}, `SELECT `+memberColumns+`, m.offered_ms < $1 AND `+silentSession+`, coalesce(s.next_chunk, 0) > 0
		FROM rollout_members m LEFT JOIN sessions s ON s.id = m.session_id
		WHERE m.rollout_id = $2 ORDER BY m.wave, m.device_id COLLATE "C"`, ms(silentBefore), id)
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
	err := s.pool.QueryRow(ctx, `SELECT wave_ends FROM rollouts WHERE id = $1`, id).Scan(&waveEnds)
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
	counts, err := queryAll(ctx, s.pool, "rollout tally", func(row rowScanner) (c count, err error) {
		err = row.Scan(&c.wave, &c.state, &c.silent, &c.served, &c.legacy, &c.outcomeAPI, &c.n)
		c.legacyOutcome = fota.LegacyOutcome(c.outcomeAPI, c.legacy)
		return c, err
	}, `SELECT wave, state, false, false, legacy, outcome_api, count(*) FROM rollout_members m
		WHERE rollout_id = $1 AND state <> $2 GROUP BY 1, 2, 5, 6
		UNION ALL
		SELECT m.wave, m.state, m.offered_ms < $3 AND `+silentSession+`, coalesce(s.next_chunk, 0) > 0, m.legacy, m.outcome_api, count(*)
		FROM rollout_members m LEFT JOIN sessions s ON s.id = m.session_id
		WHERE m.rollout_id = $1 AND m.state = $2 GROUP BY 1, 2, 3, 4, 5, 6`, id, fota.MemberOffered, ms(silentBefore))
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
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, rolloutLock); err != nil {
			return fmt.Errorf("join rollout %d: lock: %w", m.RolloutID, err)
		}
		var hardware, waveEnds string
		err := tx.QueryRow(ctx, `SELECT hardware, wave_ends FROM rollouts WHERE id = $1`, m.RolloutID).Scan(&hardware, &waveEnds)
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
		err = tx.QueryRow(ctx, `SELECT hardware, removed_ms FROM devices WHERE id = $1`, m.DeviceID).Scan(&deviceHardware, &removed)
		if errors.Is(err, pgx.ErrNoRows) || err == nil && removed > 0 {
			return fota.Errorf(fota.ENOTFOUND, "unknown device %q", m.DeviceID)
		}
		if err != nil {
			return fmt.Errorf("join rollout %d: %w", m.RolloutID, err)
		}
		if deviceHardware != hardware {
			return fota.Errorf(fota.EINVALID, "device %s is %s hardware; rollout %d is for %s", m.DeviceID, deviceHardware, m.RolloutID, hardware)
		}
		var held bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM rollout_members m JOIN rollouts r ON r.id = m.rollout_id
			WHERE m.device_id = $1 AND (m.rollout_id = $2 OR r.hardware = $3 AND r.state = ANY($4) AND NOT (m.state = ANY($5))))`,
			m.DeviceID, m.RolloutID, hardware, holdingStates, endedMembers).Scan(&held); err != nil {
			return fmt.Errorf("join rollout %d: %w", m.RolloutID, err)
		}
		if held {
			return nil
		}
		// What is left are memberships in rollouts that no longer hold:
		// those still waiting are superseded silently, as CreateRollout does.
		if _, err := tx.Exec(ctx, `UPDATE rollout_members SET state = $1, updated_ms = $2 WHERE device_id = $3 AND state = ANY($4)
			AND rollout_id IN (SELECT id FROM rollouts WHERE hardware = $5)`, fota.MemberSuperseded, ms(now), m.DeviceID, waitingMembers, hardware); err != nil {
			return fmt.Errorf("join rollout %d: %w", m.RolloutID, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO rollout_members (rollout_id, device_id, wave, state, updated_ms, legacy)
			SELECT $1, id, $3, $4, $5, api = $6 FROM devices WHERE id = $2`, m.RolloutID, m.DeviceID, m.Wave, m.State, ms(now), fota.APIEcoWatt); err != nil {
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
	err := s.tx(ctx, func(tx pgx.Tx) error {
		now := s.now()
		// The compare-and-set: a replica racing this one waits for the row
		// and then finds it moved.
		var version string
		err := tx.QueryRow(ctx, `UPDATE rollouts SET state = $1, wave = $2, reason = $3, gate_base = $4, updated_ms = $5,
			wave_opened_ms = CASE WHEN $6::boolean THEN $5 ELSE wave_opened_ms END WHERE id = $7 AND state = $8 AND wave = $9
			RETURNING release_version`, t.State, t.Wave, t.Reason, t.GateBase, ms(now), t.OpensWave(), id, t.FromState, t.FromWave).Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			var state string
			var wave int
			err := tx.QueryRow(ctx, `SELECT state, wave FROM rollouts WHERE id = $1`, id).Scan(&state, &wave)
			if _, err = one(state, err, fota.Errorf(fota.ENOTFOUND, "no rollout %d", id), "rollout"); err != nil {
				return err
			}
			return fota.Errorf(fota.ECONFLICT, "rollout %d moved: it is %s at wave %d, not %s at wave %d", id, state, wave, t.FromState, t.FromWave)
		}
		if err != nil {
			return fmt.Errorf("transition rollout %d: %w", id, err)
		}
		if t.AcceptFailures {
			if _, err := tx.Exec(ctx, `UPDATE rollout_members SET state = $1, updated_ms = $2 WHERE rollout_id = $3 AND state = $4`,
				fota.MemberAccepted, ms(now), id, fota.MemberFailed); err != nil {
				return fmt.Errorf("transition rollout %d: accept failures: %w", id, err)
			}
		}
		if t.EndSessions {
			// Not the sessions already installing (applied): their devices are
			// rebooting into the release and still report how it went.
			if ended, err = queryAll(ctx, tx, "sessions", scanSession, `SELECT `+sessionColumns+` FROM sessions
				WHERE rollout_id = $1 AND state = ANY($2) AND state <> $3`, id, activeStates, fota.SessionApplied); err != nil {
				return err
			}
			reason := t.Reason
			if reason == "" {
				reason = fmt.Sprintf("rollout %d is %s", id, t.State)
			}
			if err := s.abandon(ctx, tx, `rollout_id = $4 AND state <> $5`, reason, id, fota.SessionApplied); err != nil {
				return err
			}
		}
		return addEvent(ctx, tx, &fota.Event{Time: now, Kind: t.Event, ReleaseVersion: version, RolloutID: id, Detail: t.Detail})
	})
	return ended, err
}

// abortRolloutsOf ends the rollouts of a withdrawn release that still hold
// their devices, with an event each.
func abortRolloutsOf(ctx context.Context, tx pgx.Tx, releaseID int64, version, reason string, now time.Time) error {
	ids, err := queryAll(ctx, tx, "rollouts", func(row rowScanner) (id int64, err error) { return id, row.Scan(&id) },
		`UPDATE rollouts SET state = $1, reason = $2, updated_ms = $3 WHERE release_id = $4 AND state = ANY($5) RETURNING id`,
		fota.RolloutAborted, reason, ms(now), releaseID, holdingStates)
	if err != nil {
		return fmt.Errorf("abort rollouts of release %s: %w", version, err)
	}
	for _, id := range ids {
		if err := addEvent(ctx, tx, &fota.Event{Time: now, Kind: fota.EventRolloutAborted, ReleaseVersion: version, RolloutID: id,
			Detail: reason}); err != nil {
			return err
		}
	}
	return nil
}

// silentSession is the SQL condition (on the member's session s) for an
// offered member past the silent timeout to read silent: an EcoWatt-API
// session only once it was served every chunk, since one unauthenticated
// check-in opens it.
var silentSession = fmt.Sprintf("(s.api IS NULL OR s.api <> '%s' OR s.next_chunk >= s.total_chunks)", fota.APIEcoWatt)
