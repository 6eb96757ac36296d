package fota

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// Dashboard roles, each allowing what the ones below it allow.
const (
	RoleAdmin    = "admin"    // also releases (upload, withdraw) and users
	RoleOperator = "operator" // also rollouts (create, pause, resume, abort), labels, pins
	RoleViewer   = "viewer"   // reads every page
)

// Roles are the dashboard roles, widest first.
var Roles = []string{RoleAdmin, RoleOperator, RoleViewer}

var roleRank = map[string]int{RoleViewer: 1, RoleOperator: 2, RoleAdmin: 3}

// ValidRole reports whether r is one of Roles.
func ValidRole(r string) bool { return roleRank[r] > 0 }

// RoleAllows reports whether a user with role has what need asks for.
func RoleAllows(role, need string) bool {
	return roleRank[role] >= roleRank[need] && roleRank[need] > 0
}

// Event kinds of users and their sign-ins.
const (
	EventUserAdded       = "user-added"
	EventUserRemoved     = "user-removed"
	EventUserPassword    = "user-password"
	EventUserSignedIn    = "user-signed-in"
	EventSessionsRevoked = "user-sessions-revoked"
)

// User is a person who signs in to the dashboard. The password is kept
// only as PasswordHash (an argon2id PHC string, internal/password).
type User struct {
	ID           int64
	Name         string // unique; as token names: 1-64 of A-Z a-z 0-9 _ . -
	Role         string // RoleAdmin, RoleOperator or RoleViewer
	PasswordHash string
	Created      time.Time
}

// WebSession is a signed-in browser. Only the SHA-256 of its cookie's
// random token is stored, so a copy of the database signs nobody in.
type WebSession struct {
	Hash     [32]byte
	UserName string
	Created  time.Time
	Expires  time.Time // absolute: a session never outlives it
	LastSeen time.Time // an idle session ends IdleTimeout after it
	Revoked  time.Time // zero: in force
	Address  string    // the client's address at sign-in, shown to the user
	Agent    string    // its User-Agent at sign-in, shortened
	// PasswordHash is the hash the sign-in verified (not stored): a
	// session is made only if it is still the user's, so a sign-in racing
	// a password change cannot outlive it with the old password.
	PasswordHash string
}

// UserStore keeps dashboard users and their sessions.
type UserStore interface {
	// CreateUser stores u (ID and Created are set) and a user-added
	// event. Durable. Errors: ECONFLICT if the name exists; EINVALID for
	// a bad name or role, or an empty PasswordHash.
	CreateUser(ctx context.Context, u *User) error
	// User returns a user by name. Errors: ENOTFOUND.
	User(ctx context.Context, name string) (*User, error)
	// Users lists users by name.
	Users(ctx context.Context) ([]*User, error)
	// SetUserPassword replaces a user's password hash, revokes all of the
	// user's sessions and records it. Durable. Errors: ENOTFOUND.
	SetUserPassword(ctx context.Context, name, hash string) error
	// RemoveUser deletes a user and its sessions and records it. Durable.
	// Errors: ENOTFOUND.
	RemoveUser(ctx context.Context, name string) error
	// CreateWebSession stores a signed-in session and a user-signed-in
	// event, if s.PasswordHash is still the user's (CheckSignIn, read in
	// the same transaction). Durable. Errors: ENOTFOUND if the user does
	// not exist; ECONFLICT if the password changed meanwhile; EINVALID
	// without a PasswordHash.
	CreateWebSession(ctx context.Context, s *WebSession) error
	// WebSessionByHash finds a session, revoked and expired ones too: the
	// caller decides. Errors: ENOTFOUND.
	WebSessionByHash(ctx context.Context, hash [32]byte) (*WebSession, error)
	// TouchWebSession sets a session's LastSeen. Fast. Errors: ENOTFOUND.
	TouchWebSession(ctx context.Context, hash [32]byte, at time.Time) error
	// WebSessions lists a user's sessions ("" for everyone's) in force at
	// now (not revoked, not expired), newest first.
	WebSessions(ctx context.Context, userName string, now time.Time) ([]*WebSession, error)
	// RevokeWebSession revokes one session (signing out). Durable. Errors:
	// ENOTFOUND.
	RevokeWebSession(ctx context.Context, hash [32]byte) error
	// RevokeUserSessions revokes every session of a user in force and
	// records it; it returns how many. Durable. Errors: ENOTFOUND for an
	// unknown user.
	RevokeUserSessions(ctx context.Context, name string) (int, error)
	// PruneWebSessions deletes up to batch sessions that expired or were
	// revoked before before. Fast.
	PruneWebSessions(ctx context.Context, before time.Time, batch int) (int, error)
}

// PrepareUser checks a user before a store keeps it: a name by the rules
// of token names, a known role and a password hash. Every store applies
// these same rules.
func PrepareUser(u *User) error {
	if !ValidTokenName(u.Name) {
		return Errorf(EINVALID, "user name %q: want 1-64 characters of A-Z a-z 0-9 _ . - (not . or ..)", u.Name)
	}
	if !ValidRole(u.Role) {
		return Errorf(EINVALID, "role %q: want %s", u.Role, strings.Join(Roles, ", "))
	}
	if u.PasswordHash == "" {
		return Errorf(EINVALID, "user %s has no password hash", u.Name)
	}
	return nil
}

// InForce reports whether the session signs its browser in at now, as far
// as the store knows: not revoked, not past its absolute expiry. (An idle
// timeout is the dashboard's to apply, from LastSeen.)
func (s *WebSession) InForce(now time.Time) bool {
	return s.Revoked.IsZero() && now.Before(s.Expires)
}

// The events of users and their sessions, as every store records them:
// names, roles, counts and addresses, never a password or its hash.

// UserAddedEvent is the event of a new user.
func UserAddedEvent(u *User) *Event {
	return &Event{Time: u.Created, Kind: EventUserAdded, Detail: "user " + u.Name + ", role " + u.Role}
}

// UserPasswordEvent is the event of a password change that revoked
// revoked sessions.
func UserPasswordEvent(name string, revoked int, at time.Time) *Event {
	return &Event{Time: at, Kind: EventUserPassword, Detail: "user " + name + ", password changed, " + sessionCount(revoked) + " revoked"}
}

// UserRemovedEvent is the event of a removed user whose ended sessions in
// force went with it.
func UserRemovedEvent(u *User, ended int, at time.Time) *Event {
	return &Event{Time: at, Kind: EventUserRemoved, Detail: "user " + u.Name + ", role " + u.Role + ", " + sessionCount(ended) + " ended"}
}

// UserSignedInEvent is the event of a new web session.
func UserSignedInEvent(s *WebSession) *Event {
	detail := "user " + s.UserName + " signed in"
	if s.Address != "" {
		detail += " from " + s.Address
	}
	return &Event{Time: s.Created, Kind: EventUserSignedIn, Detail: detail}
}

// SessionsRevokedEvent is the event of revoking a user's sessions.
func SessionsRevokedEvent(name string, revoked int, at time.Time) *Event {
	return &Event{Time: at, Kind: EventSessionsRevoked, Detail: "user " + name + ", " + sessionCount(revoked) + " revoked"}
}

func sessionCount(n int) string {
	if n == 1 {
		return "1 session"
	}
	return strconv.Itoa(n) + " sessions"
}

// CheckSignIn refuses a session whose sign-in verified a password hash
// that is no longer u's: a password changed while the sign-in checked the
// old one. Every store applies it in CreateWebSession's transaction.
func CheckSignIn(u *User, s *WebSession) error {
	switch {
	case s.PasswordHash == "":
		return Errorf(EINVALID, "a web session must say which password hash its sign-in verified")
	case s.PasswordHash != u.PasswordHash:
		return Errorf(ECONFLICT, "the password of %s changed while signing in; sign in again", u.Name)
	}
	return nil
}
