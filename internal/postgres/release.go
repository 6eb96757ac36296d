package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecowatt/fota"
)

const releaseColumns = `id, product, hardware, version, security_counter, plaintext_size, plaintext_sha256,
	ciphertext_size, ciphertext_sha256, chunk_size, iv, key_id, signature_alg, notes, created_ms, published_ms,
	manifest, signature, legacy_signature, blob_key, withdrawn_ms`

func scanRelease(row rowScanner) (*fota.Release, error) {
	r := &fota.Release{}
	var created, published, counter, withdrawn int64
	err := row.Scan(&r.ID, &r.Product, &r.Hardware, &r.Version, &counter, &r.PlaintextSize, &r.PlaintextSHA256,
		&r.CiphertextSize, &r.CiphertextSHA256, &r.ChunkSize, &r.IV, &r.KeyID, &r.SignatureAlg, &r.Notes, &created, &published,
		&r.ManifestBytes, &r.Signature, &r.LegacySignature, &r.BlobKey, &withdrawn)
	if err != nil {
		return nil, err
	}
	r.SecurityCounter = uint32(counter)
	r.Created, r.Published, r.Withdrawn = fromMS(created), fromMS(published), fromMS(withdrawn)
	if len(r.LegacySignature) == 0 {
		r.LegacySignature = nil
	}
	return r, nil
}

// CreateRelease stores a release, its deltas and its published event.
func (s *Store) CreateRelease(ctx context.Context, r *fota.Release) error {
	r.Published = s.now().UTC()
	return s.tx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO releases (product, hardware, version, security_counter, plaintext_size,
			plaintext_sha256, ciphertext_size, ciphertext_sha256, chunk_size, iv, key_id, signature_alg, notes, created_ms,
			published_ms, manifest, signature, legacy_signature, blob_key)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) RETURNING id`,
			r.Product, r.Hardware, r.Version, int64(r.SecurityCounter), r.PlaintextSize, r.PlaintextSHA256, r.CiphertextSize,
			r.CiphertextSHA256, r.ChunkSize, r.IV, r.KeyID, r.SignatureAlg, r.Notes, ms(r.Created), ms(r.Published),
			r.ManifestBytes, r.Signature, r.LegacySignature, r.BlobKey).Scan(&r.ID)
		if isUnique(err) {
			return fota.Errorf(fota.ECONFLICT, "release %s for %s exists already", r.Version, r.Hardware)
		}
		if err != nil {
			return fmt.Errorf("create release: %w", err)
		}
		if err := insertDeltas(ctx, tx, r); err != nil {
			return err
		}
		return addEvent(ctx, tx, &fota.Event{Time: r.Published, Kind: fota.EventPublished, ReleaseVersion: r.Version,
			Detail: fmt.Sprintf("%s %s for %s, %d bytes, signed by %s", r.Product, r.Version, r.Hardware, r.PlaintextSize, r.KeyID)})
	})
}

// Release returns a release by id.
func (s *Store) Release(ctx context.Context, id int64) (*fota.Release, error) {
	r, err := scanRelease(s.pool.QueryRow(ctx, `SELECT `+releaseColumns+` FROM releases WHERE id = $1`, id))
	if r, err = one(r, err, fota.Errorf(fota.ENOTFOUND, "no release with id %d", id), "release"); err != nil {
		return nil, err
	}
	return s.withDeltasOf(ctx, r)
}

// ReleaseByVersion returns a release by hardware and version.
func (s *Store) ReleaseByVersion(ctx context.Context, hardware, version string) (*fota.Release, error) {
	r, err := scanRelease(s.pool.QueryRow(ctx, `SELECT `+releaseColumns+` FROM releases WHERE hardware = $1 AND version = $2`, hardware, version))
	if r, err = one(r, err, fota.Errorf(fota.ENOTFOUND, "no release %s for %s", version, hardware), "release"); err != nil {
		return nil, err
	}
	return s.withDeltasOf(ctx, r)
}

// Releases lists releases, oldest first.
func (s *Store) Releases(ctx context.Context, hardware string) ([]*fota.Release, error) {
	if hardware != "" {
		rels, err := queryAll(ctx, s.pool, "releases", scanRelease, `SELECT `+releaseColumns+` FROM releases WHERE hardware = $1 ORDER BY id`, hardware)
		if err != nil {
			return nil, err
		}
		return s.withDeltas(ctx, rels, `release_id IN (SELECT id FROM releases WHERE hardware = $1)`, hardware)
	}
	rels, err := queryAll(ctx, s.pool, "releases", scanRelease, `SELECT `+releaseColumns+` FROM releases ORDER BY id`)
	if err != nil {
		return nil, err
	}
	return s.withDeltas(ctx, rels, `true`)
}

// DeleteRelease removes a release (its deltas go with it: ON DELETE
// CASCADE) unless an active session uses it.
func (s *Store) DeleteRelease(ctx context.Context, id int64) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		var version string
		err := tx.QueryRow(ctx, `SELECT version FROM releases WHERE id = $1 FOR UPDATE`, id).Scan(&version)
		if _, err := one(version, err, fota.Errorf(fota.ENOTFOUND, "no release with id %d", id), "release"); err != nil {
			return err
		}
		var active int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM sessions WHERE release_id = $1 AND state = ANY($2)`, id, activeStates).Scan(&active); err != nil {
			return fmt.Errorf("delete release: %w", err)
		}
		if active > 0 {
			return fota.Errorf(fota.ECONFLICT, "release %s is in use by %d update session(s); delete it when they end", version, active)
		}
		// CreateRollout reads the release FOR SHARE: none is being created
		// for it while this holds the row.
		holding, err := queryAll(ctx, tx, "rollouts", scanRolloutRef,
			`SELECT id, state FROM rollouts WHERE release_id = $1 AND state = ANY($2) ORDER BY id`, id, holdingStates)
		if err != nil {
			return fmt.Errorf("delete release: %w", err)
		}
		if len(holding) > 0 {
			return fota.ReleaseInRolloutConflict(version, holding)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM releases WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete release: %w", err)
		}
		return addEvent(ctx, tx, &fota.Event{Time: s.now(), Kind: fota.EventDeleted, ReleaseVersion: version})
	})
}

// BlobInUse reports whether a release or a release's delta refers to the
// blob.
func (s *Store) BlobInUse(ctx context.Context, key string) (bool, error) {
	var inUse bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM releases WHERE blob_key = $1)
		OR EXISTS (SELECT 1 FROM release_deltas WHERE blob_key = $1)`, key).Scan(&inUse); err != nil {
		return false, fmt.Errorf("check blob %s: %w", key, err)
	}
	return inUse, nil
}

// WithdrawRelease marks a release withdrawn and ends its active sessions.
func (s *Store) WithdrawRelease(ctx context.Context, id int64, reason string) ([]*fota.Session, error) {
	var ended []*fota.Session
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var version string
		var withdrawn int64
		// FOR UPDATE waits for opens holding the row FOR SHARE (OpenSession):
		// their sessions are committed, and ended below, before this goes on.
		err := tx.QueryRow(ctx, `SELECT version, withdrawn_ms FROM releases WHERE id = $1 FOR UPDATE`, id).Scan(&version, &withdrawn)
		if _, err := one(version, err, fota.Errorf(fota.ENOTFOUND, "no release with id %d", id), "release"); err != nil {
			return err
		}
		if withdrawn > 0 {
			return fota.Errorf(fota.ECONFLICT, "release %s was withdrawn already, at %s", version, fromMS(withdrawn).Format(time.RFC3339))
		}
		now := s.now()
		if _, err := tx.Exec(ctx, `UPDATE releases SET withdrawn_ms = $1 WHERE id = $2`, ms(now), id); err != nil {
			return fmt.Errorf("withdraw release: %w", err)
		}
		// Rollout rows before session rows, the order TransitionRollout
		// locks them in: the two cannot deadlock.
		if err := abortRolloutsOf(ctx, tx, id, version, fota.WithdrawnRolloutReason(reason), now); err != nil {
			return err
		}
		if ended, err = queryAll(ctx, tx, "sessions", scanSession, `SELECT `+sessionColumns+` FROM sessions WHERE release_id = $1 AND state = ANY($2)`,
			id, activeStates); err != nil {
			return err
		}
		why := fota.WithdrawnReason(version, reason)
		if err := s.abandon(ctx, tx, `release_id = $4`, why, id); err != nil {
			return err
		}
		return addEvent(ctx, tx, &fota.Event{Time: now, Kind: fota.EventWithdrawn, ReleaseVersion: version,
			Detail: fmt.Sprintf("%s; %d update session(s) ended", why, len(ended))})
	})
	return ended, err
}
