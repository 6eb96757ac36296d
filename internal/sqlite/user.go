package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/ecowatt/fota"
)

var _ fota.UserStore = (*Store)(nil)

// CreateUser stores a dashboard user and its event.
func (s *Store) CreateUser(ctx context.Context, u *fota.User) error {
	if err := fota.PrepareUser(u); err != nil {
		return err
	}
	u.Created = s.now().UTC().Truncate(time.Millisecond)
	return s.tx(ctx, func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO users (name, role, password_hash, created_ms) VALUES (?, ?, ?, ?)`,
			u.Name, u.Role, u.PasswordHash, ms(u.Created))
		if isUnique(err) {
			return fota.Errorf(fota.ECONFLICT, "a user named %s exists already", u.Name)
		}
		if err != nil {
			return fmt.Errorf("create user: %w", err)
		}
		u.ID, _ = res.LastInsertId()
		return addEvent(ctx, tx, fota.UserAddedEvent(u))
	})
}

const userColumns = `id, name, role, password_hash, created_ms`

func scanUser(row rowScanner) (*fota.User, error) {
	u := &fota.User{}
	var created int64
	err := row.Scan(&u.ID, &u.Name, &u.Role, &u.PasswordHash, &created)
	u.Created = fromMS(created)
	return u, err
}

func noUser(name string) *fota.Error { return fota.Errorf(fota.ENOTFOUND, "no user named %q", name) }

// userIn reads a user in a transaction.
func userIn(ctx context.Context, tx *txn, name string) (*fota.User, error) {
	u, err := scanUser(tx.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE name = ?`, name))
	return one(u, err, noUser(name), "user")
}

// User returns a user by name.
func (s *Store) User(ctx context.Context, name string) (*fota.User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE name = ?`, name))
	return one(u, err, noUser(name), "user")
}

// Users lists users by name.
func (s *Store) Users(ctx context.Context) ([]*fota.User, error) {
	return queryAll(ctx, s.db, "users", scanUser, `SELECT `+userColumns+` FROM users ORDER BY name`)
}

// revokeInForce revokes a user's sessions in force at now and returns how
// many there were.
func revokeInForce(ctx context.Context, tx *txn, userID int64, now time.Time) (int, error) {
	res, err := tx.ExecContext(ctx, `UPDATE web_sessions SET revoked_ms = ? WHERE user_id = ? AND revoked_ms = 0 AND expires_ms > ?`,
		ms(now), userID, ms(now))
	if err != nil {
		return 0, fmt.Errorf("revoke sessions: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// SetUserPassword replaces a user's password hash and revokes its sessions.
func (s *Store) SetUserPassword(ctx context.Context, name, hash string) error {
	if hash == "" {
		return fota.Errorf(fota.EINVALID, "user %s: no password hash", name)
	}
	return s.tx(ctx, func(tx *txn) error {
		u, err := userIn(ctx, tx, name)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = ? WHERE id = ?`, hash, u.ID); err != nil {
			return fmt.Errorf("set password: %w", err)
		}
		now := s.now()
		n, err := revokeInForce(ctx, tx, u.ID, now)
		if err != nil {
			return err
		}
		return addEvent(ctx, tx, fota.UserPasswordEvent(name, n, now))
	})
}

// RemoveUser deletes a user and its sessions.
func (s *Store) RemoveUser(ctx context.Context, name string) error {
	return s.tx(ctx, func(tx *txn) error {
		u, err := userIn(ctx, tx, name)
		if err != nil {
			return err
		}
		now := s.now()
		var inForce int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM web_sessions WHERE user_id = ? AND revoked_ms = 0 AND expires_ms > ?`,
			u.ID, ms(now)).Scan(&inForce); err != nil {
			return fmt.Errorf("remove user: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM web_sessions WHERE user_id = ?`, u.ID); err != nil {
			return fmt.Errorf("remove user's sessions: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM users WHERE id = ?`, u.ID); err != nil {
			return fmt.Errorf("remove user: %w", err)
		}
		return addEvent(ctx, tx, fota.UserRemovedEvent(u, inForce, now))
	})
}

// CreateWebSession stores a signed-in session and its event. Created, if
// zero, is now; LastSeen, if zero, is Created.
func (s *Store) CreateWebSession(ctx context.Context, ws *fota.WebSession) error {
	if ws.Created.IsZero() {
		ws.Created = s.now().UTC()
	}
	if ws.LastSeen.IsZero() {
		ws.LastSeen = ws.Created
	}
	return s.tx(ctx, func(tx *txn) error {
		u, err := userIn(ctx, tx, ws.UserName)
		if err != nil {
			return err
		}
		if err := fota.CheckSignIn(u, ws); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO web_sessions (hash, user_id, created_ms, expires_ms, last_seen_ms, revoked_ms, address, agent)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, ws.Hash[:], u.ID, ms(ws.Created), ms(ws.Expires), ms(ws.LastSeen), ms(ws.Revoked), ws.Address, ws.Agent)
		if isUnique(err) {
			return fota.Errorf(fota.ECONFLICT, "a session with that token exists already")
		}
		if err != nil {
			return fmt.Errorf("create web session: %w", err)
		}
		return addEvent(ctx, tx, fota.UserSignedInEvent(ws))
	})
}

const webSessionColumns = `w.hash, u.name, w.created_ms, w.expires_ms, w.last_seen_ms, w.revoked_ms, w.address, w.agent`

func scanWebSession(row rowScanner) (*fota.WebSession, error) {
	ws := &fota.WebSession{}
	var hash []byte
	var created, expires, seen, revoked int64
	if err := row.Scan(&hash, &ws.UserName, &created, &expires, &seen, &revoked, &ws.Address, &ws.Agent); err != nil {
		return nil, err
	}
	if len(hash) != len(ws.Hash) {
		return nil, fmt.Errorf("web session hash of %d bytes", len(hash))
	}
	copy(ws.Hash[:], hash)
	ws.Created, ws.Expires, ws.LastSeen, ws.Revoked = fromMS(created), fromMS(expires), fromMS(seen), fromMS(revoked)
	return ws, nil
}

func noWebSession() *fota.Error { return fota.Errorf(fota.ENOTFOUND, "no such session") }

// WebSessionByHash finds a session by the SHA-256 of its token.
func (s *Store) WebSessionByHash(ctx context.Context, hash [32]byte) (*fota.WebSession, error) {
	ws, err := scanWebSession(s.db.QueryRowContext(ctx, `SELECT `+webSessionColumns+`
		FROM web_sessions w JOIN users u ON u.id = w.user_id WHERE w.hash = ?`, hash[:]))
	return one(ws, err, noWebSession(), "web session")
}

// TouchWebSession raises a session's last-seen time to at (never lowers
// it: requests of one browser may finish out of order).
func (s *Store) TouchWebSession(ctx context.Context, hash [32]byte, at time.Time) error {
	res, err := s.fast.ExecContext(ctx, `UPDATE web_sessions SET last_seen_ms = max(last_seen_ms, ?) WHERE hash = ?`, ms(at), hash[:])
	if err != nil {
		return fmt.Errorf("touch web session: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return noWebSession()
	}
	return nil
}

// WebSessions lists the sessions in force at now, newest first.
func (s *Store) WebSessions(ctx context.Context, userName string, now time.Time) ([]*fota.WebSession, error) {
	q := `SELECT ` + webSessionColumns + ` FROM web_sessions w JOIN users u ON u.id = w.user_id
		WHERE w.revoked_ms = 0 AND w.expires_ms > ?`
	args := []any{ms(now)}
	if userName != "" {
		q += ` AND u.name = ?`
		args = append(args, userName)
	}
	return queryAll(ctx, s.db, "web sessions", scanWebSession, q+` ORDER BY w.created_ms DESC, w.hash`, args...)
}

// RevokeWebSession revokes one session; revoking it again changes nothing.
func (s *Store) RevokeWebSession(ctx context.Context, hash [32]byte) error {
	res, err := s.db.ExecContext(ctx, `UPDATE web_sessions SET revoked_ms = CASE WHEN revoked_ms = 0 THEN ? ELSE revoked_ms END WHERE hash = ?`,
		ms(s.now()), hash[:])
	if err != nil {
		return fmt.Errorf("revoke web session: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return noWebSession()
	}
	return nil
}

// RevokeUserSessions revokes a user's sessions in force and records it.
func (s *Store) RevokeUserSessions(ctx context.Context, name string) (int, error) {
	var n int
	err := s.tx(ctx, func(tx *txn) error {
		u, err := userIn(ctx, tx, name)
		if err != nil {
			return err
		}
		now := s.now()
		if n, err = revokeInForce(ctx, tx, u.ID, now); err != nil {
			return err
		}
		return addEvent(ctx, tx, fota.SessionsRevokedEvent(name, n, now))
	})
	return n, err
}

// PruneWebSessions deletes up to batch sessions that expired or were
// revoked before before.
func (s *Store) PruneWebSessions(ctx context.Context, before time.Time, batch int) (int, error) {
	if batch <= 0 {
		return 0, nil
	}
	res, err := s.fast.ExecContext(ctx, `DELETE FROM web_sessions WHERE hash IN (SELECT hash FROM web_sessions
		WHERE expires_ms < ? OR revoked_ms > 0 AND revoked_ms < ? LIMIT ?)`, ms(before), ms(before), batch)
	if err != nil {
		return 0, fmt.Errorf("prune web sessions: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}
