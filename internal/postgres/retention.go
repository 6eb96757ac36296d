package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecowatt/fota"
)

// prunableSessions is fota.SessionPrunable in SQL: ended, and not a native
// rollback or refusal (RejectedReleases reads those).
var prunableSessions = fmt.Sprintf("NOT (state = ANY('{%s,%s,%s,%s}')) AND NOT (api = '%s' AND state IN ('%s', '%s'))",
	fota.SessionOpen, fota.SessionDownloaded, fota.SessionVerified, fota.SessionApplied,
	fota.APINative, fota.SessionRolledBack, fota.SessionRefused)

// Every prune below picks its rows FOR UPDATE SKIP LOCKED: replicas
// pruning at the same moment take different rows instead of queueing on
// each other's.

// PruneEvents deletes up to batch events past their age or count.
func (s *Store) PruneEvents(ctx context.Context, before time.Time, keep, batch int) (int, error) {
	if batch <= 0 {
		return 0, nil
	}
	var n int64
	err := s.fastTx(ctx, func(tx pgx.Tx) error {
		if !before.IsZero() {
			tag, err := tx.Exec(ctx, `DELETE FROM events WHERE id IN (SELECT id FROM events WHERE time_ms < $1 ORDER BY time_ms LIMIT $2
				FOR UPDATE SKIP LOCKED)`, ms(before), batch)
			if err != nil {
				return fmt.Errorf("prune events by age: %w", err)
			}
			n = tag.RowsAffected()
		}
		if keep <= 0 || n >= int64(batch) {
			return nil
		}
		tag, err := tx.Exec(ctx, `DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id <= (SELECT coalesce(max(id), 0) FROM events) - $1
			ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)`, keep, int64(batch)-n)
		if err != nil {
			return fmt.Errorf("prune events by count: %w", err)
		}
		n += tag.RowsAffected()
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
	err := s.fastTx(ctx, func(tx pgx.Tx) error {
		if !before.IsZero() {
			tag, err := tx.Exec(ctx, `DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE updated_ms < $1 AND `+prunableSessions+`
				ORDER BY updated_ms LIMIT $2 FOR UPDATE SKIP LOCKED)`, ms(before), batch)
			if err != nil {
				return fmt.Errorf("prune sessions by age: %w", err)
			}
			n = tag.RowsAffected()
		}
		if keep <= 0 || n >= int64(batch) {
			return nil
		}
		// The newest of those past the count: every prunable session at or
		// before it (by update time, then id, so that sessions ended in one
		// transaction are cut exactly) goes.
		var updated int64
		var id string
		err := tx.QueryRow(ctx, `SELECT updated_ms, id FROM sessions WHERE `+prunableSessions+`
			ORDER BY updated_ms DESC, id COLLATE "C" DESC LIMIT 1 OFFSET $1`, keep).Scan(&updated, &id)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // no more than keep
		}
		if err != nil {
			return fmt.Errorf("prune sessions by count: %w", err)
		}
		tag, err := tx.Exec(ctx, `DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE `+prunableSessions+`
			AND (updated_ms < $1 OR updated_ms = $1 AND id COLLATE "C" <= $2) ORDER BY updated_ms LIMIT $3 FOR UPDATE SKIP LOCKED)`,
			updated, id, int64(batch)-n)
		if err != nil {
			return fmt.Errorf("prune sessions by count: %w", err)
		}
		n += tag.RowsAffected()
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
	var n int64
	err := s.fastTx(ctx, func(tx pgx.Tx) error {
		ids, err := queryAll(ctx, tx, "removed devices", func(row rowScanner) (id string, err error) { return id, row.Scan(&id) },
			`SELECT id FROM devices WHERE removed_ms > 0 AND removed_ms < $1 ORDER BY removed_ms LIMIT $2 FOR UPDATE SKIP LOCKED`, ms(before), batch)
		if err != nil || len(ids) == 0 {
			return err
		}
		for _, table := range []string{"rollout_members", "backoffs", "sessions"} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE device_id = ANY($1)`, ids); err != nil {
				return fmt.Errorf("prune removed devices' %s: %w", table, err)
			}
		}
		tag, err := tx.Exec(ctx, `DELETE FROM devices WHERE id = ANY($1)`, ids)
		if err != nil {
			return fmt.Errorf("prune removed devices: %w", err)
		}
		n = tag.RowsAffected()
		return nil
	})
	return int(n), err
}
