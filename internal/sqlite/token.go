package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ecowatt/fota"
)

// CreateToken stores an admin token hash and its event.
func (s *Store) CreateToken(ctx context.Context, t *fota.Token) error {
	if err := fota.PrepareToken(t); err != nil {
		return err
	}
	t.Created = s.now().UTC()
	return s.tx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO tokens (name, hash, scope, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?)`,
			t.Name, t.Hash[:], t.Scope, ms(t.Created), ms(t.Expires))
		if isUnique(err) {
			return fota.Errorf(fota.ECONFLICT, "a token named %q exists already; choose another name", t.Name)
		}
		if err != nil {
			return fmt.Errorf("create token: %w", err)
		}
		t.ID, _ = res.LastInsertId()
		return addEvent(ctx, tx, fota.TokenCreatedEvent(t))
	})
}

const tokenColumns = `id, name, scope, created_ms, expires_ms, revoked_ms`

func scanToken(row rowScanner) (*fota.Token, error) {
	t := &fota.Token{}
	var created, expires, revoked int64
	if err := row.Scan(&t.ID, &t.Name, &t.Scope, &created, &expires, &revoked); err != nil {
		return nil, err
	}
	t.Created, t.Expires, t.Revoked = fromMS(created), fromMS(expires), fromMS(revoked)
	return t, nil
}

// TokenByHash finds a token by the SHA-256 of its text.
func (s *Store) TokenByHash(ctx context.Context, hash [32]byte) (*fota.Token, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE hash = ?`, hash[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fota.Errorf(fota.ENOTFOUND, "no such token")
	}
	if err != nil {
		return nil, fmt.Errorf("read token: %w", err)
	}
	t.Hash = hash
	return t, nil
}

// Tokens lists tokens by name.
func (s *Store) Tokens(ctx context.Context) ([]*fota.Token, error) {
	return queryAll(ctx, s.db, "tokens", scanToken, `SELECT `+tokenColumns+` FROM tokens ORDER BY name`)
}

// RevokeToken revokes a token by name.
func (s *Store) RevokeToken(ctx context.Context, name string) error {
	return s.tx(ctx, func(tx *txn) error {
		t, err := scanToken(tx.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE name = ?`, name))
		if errors.Is(err, sql.ErrNoRows) {
			return fota.Errorf(fota.ENOTFOUND, "no token named %q", name)
		}
		if err != nil {
			return fmt.Errorf("revoke token: %w", err)
		}
		if !t.Revoked.IsZero() {
			return fota.Errorf(fota.ECONFLICT, "token %q was revoked already", name)
		}
		now := s.now()
		if _, err := tx.ExecContext(ctx, `UPDATE tokens SET revoked_ms = ? WHERE id = ?`, ms(now), t.ID); err != nil {
			return fmt.Errorf("revoke token: %w", err)
		}
		return addEvent(ctx, tx, &fota.Event{Time: now, Kind: fota.EventTokenRevoked, Detail: "token " + name})
	})
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
