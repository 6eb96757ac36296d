package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

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
func insertDeltas(ctx context.Context, tx pgx.Tx, r *fota.Release) error {
	for i, d := range r.Deltas {
		_, err := tx.Exec(ctx, `INSERT INTO release_deltas (release_id, position, base_sha256, base_version, base_size,
			compression, patch_size, ciphertext_size, ciphertext_sha256, manifest, signature, blob_key)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`, r.ID, i, d.BaseSHA256, d.BaseVersion, d.BaseSize, d.Compression,
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
	deltas, err := queryAll(ctx, s.pool, "release deltas", scanDelta,
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
	if _, err := s.withDeltas(ctx, []*fota.Release{r}, `release_id = $1`, r.ID); err != nil {
		return nil, fmt.Errorf("read release %s: %w", r.Version, err)
	}
	return r, nil
}

// DeltaFailures lists the bases of the device's failed delta sessions for
// the release, in order.
func (s *Store) DeltaFailures(ctx context.Context, deviceID string, releaseID int64) ([]string, error) {
	bases, err := queryAll(ctx, s.pool, "failed delta sessions", func(row rowScanner) (string, error) {
		var base string
		return base, row.Scan(&base)
	}, `SELECT DISTINCT delta_base FROM sessions WHERE device_id = $1 AND state = $2 AND release_id = $3 AND delta_base <> ''
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
	// partial index's condition, which a generic plan cannot infer from a
	// parameter.
	q := `SELECT count(*) FILTER (WHERE s.delta_base = ''), coalesce(sum(s.bytes_served) FILTER (WHERE s.delta_base = ''), 0)::bigint,
		count(*) FILTER (WHERE s.delta_base <> ''), coalesce(sum(s.bytes_served) FILTER (WHERE s.delta_base <> ''), 0)::bigint,
		count(*) FILTER (WHERE s.delta_base <> '' AND s.state = 'failed'),
		count(*) FILTER (WHERE s.delta_base <> '' AND s.state <> 'failed' AND s.next_chunk >= s.total_chunks),
		coalesce(sum(s.bytes_served) FILTER (WHERE s.delta_base <> '' AND s.state <> 'failed' AND s.next_chunk >= s.total_chunks), 0)::bigint,
		coalesce(sum(r.ciphertext_size) FILTER (WHERE s.delta_base <> '' AND s.state <> 'failed' AND s.next_chunk >= s.total_chunks), 0)::bigint
		FROM sessions s LEFT JOIN releases r ON r.id = s.release_id WHERE true`
	var args []any
	if f.RolloutID != 0 {
		args = append(args, f.RolloutID)
		q += fmt.Sprintf(` AND s.rollout_id = $%d AND s.rollout_id <> 0`, len(args))
	}
	if f.ReleaseID != 0 {
		args = append(args, f.ReleaseID)
		q += fmt.Sprintf(` AND s.release_id = $%d`, len(args))
	}
	var t fota.Traffic
	if err := s.pool.QueryRow(ctx, q, args...).Scan(&t.FullSessions, &t.FullBytes, &t.DeltaSessions, &t.DeltaBytes,
		&t.DeltaFailed, &t.DeltaDone, &t.DeltaDoneBytes, &t.DeltaFullBytes); err != nil {
		return fota.Traffic{}, fmt.Errorf("sum session traffic: %w", err)
	}
	return t, nil
}
