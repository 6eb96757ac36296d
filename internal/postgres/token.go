package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/ecowatt/fota"
)

// CreateToken stores an admin token hash.
func (s *Store) CreateToken(ctx context.Context, t *fota.Token) error {
	t.Created = s.now().UTC()
	err := s.pool.QueryRow(ctx, `INSERT INTO tokens (name, hash, created_ms) VALUES ($1, $2, $3) RETURNING id`, t.Name, t.Hash[:], ms(t.Created)).Scan(&t.ID)
	if isUnique(err) {
		return fota.Errorf(fota.ECONFLICT, "token exists already")
	}
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	return nil
}

// TokenByHash finds a token by the SHA-256 of its text.
func (s *Store) TokenByHash(ctx context.Context, hash [32]byte) (*fota.Token, error) {
	t := &fota.Token{Hash: hash}
	var created int64
	err := s.pool.QueryRow(ctx, `SELECT id, name, created_ms FROM tokens WHERE hash = $1`, hash[:]).Scan(&t.ID, &t.Name, &created)
	t.Created = fromMS(created)
	return one(t, err, fota.Errorf(fota.ENOTFOUND, "no such token"), "token")
}

// CountTokens returns how many tokens exist.
func (s *Store) CountTokens(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM tokens`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count tokens: %w", err)
	}
	return n, nil
}

// UseNonce records a nonce; a second use is a replay. Every replica sees
// every nonce, so a replay to another replica is refused too.
func (s *Store) UseNonce(ctx context.Context, deviceID, nonce string, expires time.Time) error {
	// Waits for the WAL flush: a nonce lost to a database crash could be
	// replayed once it is back.
	tag, err := s.pool.Exec(ctx, `INSERT INTO nonces (device_id, nonce, expires_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, deviceID, nonce, ms(expires))
	if err != nil {
		return fmt.Errorf("record nonce: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fota.Errorf(fota.ECONFLICT, "nonce already used")
	}
	return nil
}

// PurgeNonces deletes expired nonces.
func (s *Store) PurgeNonces(ctx context.Context, t time.Time) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM nonces WHERE expires_ms < $1`, ms(t)); err != nil {
		return fmt.Errorf("purge nonces: %w", err)
	}
	return nil
}
