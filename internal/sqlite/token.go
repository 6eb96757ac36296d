package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ecowatt/fota"
)

// CreateToken stores an admin token hash.
func (s *Store) CreateToken(ctx context.Context, t *fota.Token) error {
	t.Created = s.now().UTC()
	res, err := s.db.ExecContext(ctx, `INSERT INTO tokens (name, hash, created_ms) VALUES (?, ?, ?)`, t.Name, t.Hash[:], ms(t.Created))
	if isUnique(err) {
		return fota.Errorf(fota.ECONFLICT, "token exists already")
	}
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	t.ID, _ = res.LastInsertId()
	return nil
}

// TokenByHash finds a token by the SHA-256 of its text.
func (s *Store) TokenByHash(ctx context.Context, hash [32]byte) (*fota.Token, error) {
	t := &fota.Token{Hash: hash}
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT id, name, created_ms FROM tokens WHERE hash = ?`, hash[:]).Scan(&t.ID, &t.Name, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fota.Errorf(fota.ENOTFOUND, "no such token")
	}
	if err != nil {
		return nil, fmt.Errorf("read token: %w", err)
	}
	t.Created = fromMS(created)
	return t, nil
}

// CountTokens returns how many tokens exist.
func (s *Store) CountTokens(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM tokens`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count tokens: %w", err)
	}
	return n, nil
}

// PurgeNonces deletes expired nonces.
func (s *Store) PurgeNonces(ctx context.Context, t time.Time) error {
	if _, err := s.fast.ExecContext(ctx, `DELETE FROM nonces WHERE expires_ms < ?`, ms(t)); err != nil {
		return fmt.Errorf("purge nonces: %w", err)
	}
	return nil
}
