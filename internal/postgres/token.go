package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ecowatt/fota"
)

// CreateToken stores an admin token hash and its event.
func (s *Store) CreateToken(ctx context.Context, t *fota.Token) error {
	if err := fota.PrepareToken(t); err != nil {
		return err
	}
	t.Created = s.now().UTC()
	return s.tx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO tokens (name, hash, scope, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5) RETURNING id`,
			t.Name, t.Hash[:], t.Scope, ms(t.Created), ms(t.Expires)).Scan(&t.ID)
		if isUnique(err) {
			return fota.Errorf(fota.ECONFLICT, "a token named %q exists already; choose another name", t.Name)
		}
		if err != nil {
			return fmt.Errorf("create token: %w", err)
		}
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
	t, err := scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE hash = $1`, hash[:]))
	t, err = one(t, err, fota.Errorf(fota.ENOTFOUND, "no such token"), "token")
	if err != nil {
		return nil, err
	}
	t.Hash = hash
	return t, nil
}

// Tokens lists tokens by name.
func (s *Store) Tokens(ctx context.Context) ([]*fota.Token, error) {
	return queryAll(ctx, s.pool, "tokens", scanToken, `SELECT `+tokenColumns+` FROM tokens ORDER BY name COLLATE "C"`)
}

// RevokeToken revokes a token by name.
func (s *Store) RevokeToken(ctx context.Context, name string) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		t, err := scanToken(tx.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE name = $1 FOR UPDATE`, name))
		if errors.Is(err, pgx.ErrNoRows) {
			return fota.Errorf(fota.ENOTFOUND, "no token named %q", name)
		}
		if err != nil {
			return fmt.Errorf("revoke token: %w", err)
		}
		if !t.Revoked.IsZero() {
			return fota.Errorf(fota.ECONFLICT, "token %q was revoked already", name)
		}
		now := s.now()
		if _, err := tx.Exec(ctx, `UPDATE tokens SET revoked_ms = $1 WHERE id = $2`, ms(now), t.ID); err != nil {
			return fmt.Errorf("revoke token: %w", err)
		}
		return addEvent(ctx, tx, &fota.Event{Time: now, Kind: fota.EventTokenRevoked, Detail: "token " + name})
	})
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
