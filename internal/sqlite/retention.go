package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ecowatt/fota"
)

// prunableSessions is fota.SessionPrunable in SQL: ended, and not a native
// rollback or refusal (RejectedReleases reads those).
var prunableSessions = fmt.Sprintf("state NOT IN %s AND NOT (api = '%s' AND state IN ('%s', '%s'))",
	activeStates, fota.APINative, fota.SessionRolledBack, fota.SessionRefused)

// PruneEvents deletes up to batch events past their age or count.
func (s *Store) PruneEvents(ctx context.Context, before time.Time, keep, batch int) (int, error) {
	if batch <= 0 {
		return 0, nil
	}
	var n int64
	err := inTx(ctx, s.fast, func(tx *txn) error {
		if !before.IsZero() {
			res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE id IN (SELECT id FROM events WHERE time_ms < ? ORDER BY time_ms LIMIT ?)`,
				ms(before), batch)
			if err != nil {
				return fmt.Errorf("prune events by age: %w", err)
			}
			n, _ = res.RowsAffected()
		}
		if keep <= 0 || n >= int64(batch) {
			return nil
		}
		var newest sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT max(id) FROM events`).Scan(&newest); err != nil {
			return fmt.Errorf("prune events by count: %w", err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id <= ? ORDER BY id LIMIT ?)`,
			newest.Int64-int64(keep), int64(batch)-n)
		if err != nil {
			return fmt.Errorf("prune events by count: %w", err)
		}
		m, _ := res.RowsAffected()
		n += m
		return nil
	})
	return int(n), err
}

// PruneSessions deletes up to batch prunable sessions past their age or count.
func (s *Store) PruneSessions(ctx context.Context, before time.Time, keep, batch int) (int, error) {
	if batch <= 0 {
		return 0, nil
	}
	var n int64
	err := inTx(ctx, s.fast, func(tx *txn) error {
		if !before.IsZero() {
			res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE updated_ms < ? AND `+prunableSessions+`
				ORDER BY updated_ms LIMIT ?)`, ms(before), batch)
			if err != nil {
				return fmt.Errorf("prune sessions by age: %w", err)
			}
			n, _ = res.RowsAffected()
		}
		if keep <= 0 || n >= int64(batch) {
			return nil
		}
		// The oldest of those past the count: every prunable session at or
		// before it (by update time, then id, so that sessions ended in one
		// transaction are cut exactly) goes.
		var updated int64
		var id string
		err := tx.QueryRowContext(ctx, `SELECT updated_ms, id FROM sessions WHERE `+prunableSessions+`
			ORDER BY updated_ms DESC, id DESC LIMIT 1 OFFSET ?`, keep).Scan(&updated, &id)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // no more than keep
		}
		if err != nil {
			return fmt.Errorf("prune sessions by count: %w", err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE `+prunableSessions+`
			AND (updated_ms < ? OR updated_ms = ? AND id <= ?) ORDER BY updated_ms LIMIT ?)`, updated, updated, id, int64(batch)-n)
		if err != nil {
			return fmt.Errorf("prune sessions by count: %w", err)
		}
		m, _ := res.RowsAffected()
		n += m
		return nil
	})
	return int(n), err
}

// PruneRemovedDevices deletes up to batch devices removed before before,
// with their sessions, backoffs and rollout memberships.
func (s *Store) PruneRemovedDevices(ctx context.Context, before time.Time, batch int) (int, error) {
	if batch <= 0 {
		return 0, nil
	}
	var n int
	err := inTx(ctx, s.fast, func(tx *txn) error {
		ids, err := queryAll(ctx, tx, "removed devices", func(row rowScanner) (any, error) {
			var id string
			return id, row.Scan(&id)
		}, `SELECT id FROM devices WHERE removed_ms > 0 AND removed_ms < ? ORDER BY removed_ms LIMIT ?`, ms(before), batch)
		if err != nil || len(ids) == 0 {
			return err
		}
		in := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(ids)), ", ") + ")"
		for _, table := range []string{"rollout_members", "backoffs", "sessions"} {
			if _, err := tx.Tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE device_id IN `+in, ids...); err != nil {
				return fmt.Errorf("prune removed devices' %s: %w", table, err)
			}
		}
		res, err := tx.Tx.ExecContext(ctx, `DELETE FROM devices WHERE id IN `+in, ids...)
		if err != nil {
			return fmt.Errorf("prune removed devices: %w", err)
		}
		m, _ := res.RowsAffected()
		n = int(m)
		return nil
	})
	return n, err
}
