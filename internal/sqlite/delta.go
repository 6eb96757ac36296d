package sqlite

import (
	"context"
	"fmt"

	"github.com/ecowatt/fota"
)

const deltaColumns = `release_id, base_sha256, base_version, base_size, compression, patch_size, ciphertext_size,
	ciphertext_sha256, manifest, signature, blob_key`

// releaseDelta is a row of release_deltas: a delta and its release.
type releaseDelta struct {
	releaseID int64
	fota.ReleaseDelta
}

func scanDelta(row rowScanner) (releaseDelta, error) {
	var d releaseDelta
	err := row.Scan(&d.releaseID, &d.BaseSHA256, &d.BaseVersion, &d.BaseSize, &d.Compression, &d.PatchSize, &d.CiphertextSize,
		&d.CiphertextSHA256, &d.ManifestBytes, &d.Signature, &d.BlobKey)
	return d, err
}

// insertDeltas stores r's deltas in the transaction that stores r, in
// their order. Errors: ECONFLICT for two deltas from one base.
func insertDeltas(ctx context.Context, tx *txn, r *fota.Release) error {
	for i, d := range r.Deltas {
		_, err := tx.ExecContext(ctx, `INSERT INTO release_deltas (release_id, position, base_sha256, base_version, base_size,
			compression, patch_size, ciphertext_size, ciphertext_sha256, manifest, signature, blob_key)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, r.ID, i, d.BaseSHA256, d.BaseVersion, d.BaseSize, d.Compression,
			d.PatchSize, d.CiphertextSize, d.CiphertextSHA256, d.ManifestBytes, d.Signature, d.BlobKey)
		if isUnique(err) {
			return fota.Errorf(fota.ECONFLICT, "release %s for %s has two deltas from base %s; keep one per base", r.Version, r.Hardware, d.BaseSHA256)
		}
		if err != nil {
			return fmt.Errorf("create release %s: delta from %s: %w", r.Version, d.BaseVersion, err)
		}
	}
	return nil
}

// withDeltas fills the Deltas of rels (read just before) with one query.
// where selects the deltas' releases as the releases' query did. Read
// after the releases, outside a transaction: a release created in between
// is not in rels, and one deleted in between is read without deltas,
// which it no longer has anyway.
func (s *Store) withDeltas(ctx context.Context, rels []*fota.Release, where string, args ...any) ([]*fota.Release, error) {
	if len(rels) == 0 {
		return rels, nil
	}
	deltas, err := queryAll(ctx, s.db, "release deltas", scanDelta,
		`SELECT `+deltaColumns+` FROM release_deltas WHERE `+where+` ORDER BY release_id, position`, args...)
	if err != nil {
		return nil, err
	}
	byID := make(map[int64]*fota.Release, len(rels))
	for _, r := range rels {
		byID[r.ID] = r
	}
	for _, d := range deltas {
		if r := byID[d.releaseID]; r != nil {
			r.Deltas = append(r.Deltas, d.ReleaseDelta)
		}
	}
	return rels, nil
}

// withDeltasOf is withDeltas for one release.
func (s *Store) withDeltasOf(ctx context.Context, r *fota.Release) (*fota.Release, error) {
	if _, err := s.withDeltas(ctx, []*fota.Release{r}, `release_id = ?`, r.ID); err != nil {
		return nil, fmt.Errorf("read release %s: %w", r.Version, err)
	}
	return r, nil
}

// DeltaFailures lists the bases of the device's failed delta sessions for
// the release, in order. The unary + keeps SQLite, which has no
// statistics, off sessions_release (every session of the release) and on
// sessions_device_state (the device's failed ones): EXPLAIN QUERY PLAN
// showed it picking the first.
func (s *Store) DeltaFailures(ctx context.Context, deviceID string, releaseID int64) ([]string, error) {
	bases, err := queryAll(ctx, s.db, "failed delta sessions", func(row rowScanner) (string, error) {
		var base string
		return base, row.Scan(&base)
	}, `SELECT DISTINCT delta_base FROM sessions WHERE device_id = ? AND state = ? AND +release_id = ? AND delta_base <> ''
		ORDER BY delta_base`, deviceID, fota.SessionFailed, releaseID)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", deviceID, err)
	}
	return bases, nil
}

// Traffic sums the sessions f selects, full and delta apart, in one query.
// A session whose release was deleted counts its bytes, but not its
// release's size (which is gone) in DeltaFullBytes.
func (s *Store) Traffic(ctx context.Context, f fota.TrafficFilter) (fota.Traffic, error) {
	// Fixed fragments: four queries at most. The rollout term repeats the
	// partial index's condition, which SQLite cannot infer from a parameter.
	// A delta session is done once served in full and not failed: only
	// those say what a delta saved.
	q := `SELECT coalesce(sum(s.delta_base = ''), 0), coalesce(sum(CASE WHEN s.delta_base = '' THEN s.bytes_served END), 0),
		coalesce(sum(s.delta_base <> ''), 0), coalesce(sum(CASE WHEN s.delta_base <> '' THEN s.bytes_served END), 0),
		coalesce(sum(s.delta_base <> '' AND s.state = 'failed'), 0),
		coalesce(sum(s.delta_base <> '' AND s.state <> 'failed' AND s.next_chunk >= s.total_chunks), 0),
		coalesce(sum(CASE WHEN s.delta_base <> '' AND s.state <> 'failed' AND s.next_chunk >= s.total_chunks THEN s.bytes_served END), 0),
		coalesce(sum(CASE WHEN s.delta_base <> '' AND s.state <> 'failed' AND s.next_chunk >= s.total_chunks THEN r.ciphertext_size END), 0)
		FROM sessions s LEFT JOIN releases r ON r.id = s.release_id WHERE 1`
	var args []any
	if f.RolloutID != 0 {
		q += ` AND s.rollout_id = ? AND s.rollout_id <> 0`
		args = append(args, f.RolloutID)
	}
	if f.ReleaseID != 0 {
		q += ` AND s.release_id = ?`
		args = append(args, f.ReleaseID)
	}
	var t fota.Traffic
	if err := s.db.QueryRowContext(ctx, q, args...).Scan(&t.FullSessions, &t.FullBytes, &t.DeltaSessions, &t.DeltaBytes,
		&t.DeltaFailed, &t.DeltaDone, &t.DeltaDoneBytes, &t.DeltaFullBytes); err != nil {
		return fota.Traffic{}, fmt.Errorf("sum session traffic: %w", err)
	}
	return t, nil
}
