package fota

import (
	"context"
	"time"
)

// Durability. Every store method is atomic: a crash leaves all of its
// writes or none. Beyond that each method's doc says which of two promises
// it keeps:
//
//   - Durable: the commit is on disk (fsynced; PostgreSQL: WAL flushed)
//     before the method returns. An operating-system crash or power loss
//     afterwards loses nothing. Everything an operator does is durable.
//   - Fast: committed, so a crash of the server process loses nothing, but
//     an operating-system crash or power loss may lose the last moments of
//     it (SQLite synchronous=NORMAL, PostgreSQL synchronous_commit=off);
//     never a half write. What devices redo by themselves is fast: check-ins
//     (last seen, sessions opened), download progress, the steps of a
//     session before its outcome. Outcomes and nonces are durable.

// ReleaseStore keeps published releases.
type ReleaseStore interface {
	// CreateRelease stores r with its deltas (ID and Published are set)
	// and its published event, all or nothing. Reads of a release (by id,
	// by version, lists) return its Deltas in the order stored. Durable.
	// Errors: ECONFLICT if r.Hardware and r.Version exist, or two of its
	// deltas have one base.
	CreateRelease(ctx context.Context, r *Release) error
	// Release returns a release by id. Errors: ENOTFOUND.
	Release(ctx context.Context, id int64) (*Release, error)
	// ReleaseByVersion returns a release. Errors: ENOTFOUND.
	ReleaseByVersion(ctx context.Context, hardware, version string) (*Release, error)
	// Releases lists releases, oldest first; hardware "" lists all.
	Releases(ctx context.Context, hardware string) ([]*Release, error)
	// DeleteRelease removes a release and records it; its aborted and
	// completed rollouts keep only its version. Durable. Errors:
	// ENOTFOUND; ECONFLICT while an active session uses it or a rollout
	// holds its devices for it (RolloutHolds).
	DeleteRelease(ctx context.Context, id int64) error
	// BlobInUse reports whether any release, or any release's delta,
	// refers to the blob key.
	BlobInUse(ctx context.Context, key string) (bool, error)
	// WithdrawRelease marks a release withdrawn, so that it is never
	// offered or opened again, and ends its active sessions as abandoned
	// with reason, with an event each and a release-withdrawn event; it
	// returns the sessions it ended. Its rollouts that hold their devices
	// end as aborted (WithdrawnRolloutReason), with a rollout-aborted event
	// each. The row stays, for history and for
	// the sessions that name it. Durable. Errors: ENOTFOUND; ECONFLICT if
	// it is withdrawn already.
	WithdrawRelease(ctx context.Context, id int64, reason string) ([]*Session, error)
}

// DeviceStore keeps registered devices and what holds releases back from
// them.
type DeviceStore interface {
	// CreateDevice stores d (Created is set; API "" is stored as
	// APINative; Labels, nil for none) and its device-added event.
	// Durable. Errors: ECONFLICT if the id exists, removed devices
	// included: an id is never reused while its history is kept; EINVALID
	// for labels ValidLabels refuses.
	CreateDevice(ctx context.Context, d *Device) error
	// Device returns a device, a removed one too (Removed is set: callers
	// that act for the device refuse it), with its Labels (never nil) and
	// Inventory. Errors: ENOTFOUND.
	Device(ctx context.Context, id string) (*Device, error)
	// Devices lists devices by id, removed ones left out.
	Devices(ctx context.Context) ([]*Device, error)
	// RemoveDevice marks a device removed, ends its active sessions as
	// abandoned with an event each, deletes its backoffs, ends its rollout
	// memberships as removed (superseded ones stay so), and records a
	// device-removed event; it returns the sessions it ended.
	// The row stays as a tombstone, so its history stays readable until
	// PruneRemovedDevices. Durable. Errors: ENOTFOUND for an unknown or
	// already removed device.
	RemoveDevice(ctx context.Context, id string) ([]*Session, error)
	// DeviceSeen records that a device made a request, reporting version
	// ("" keeps the stored one) and, if inv is not nil, what it reports
	// about itself (as SetInventory, in the same write). Fast. Errors:
	// ENOTFOUND.
	DeviceSeen(ctx context.Context, id, version string, inv *Inventory, at time.Time) error
	// PinDevice pins a device to a release version ("" unpins) and records
	// it. Durable. Errors: ENOTFOUND (removed devices too).
	PinDevice(ctx context.Context, id, version string) error
	// SetDeviceAPI sets a device's API policy and records it; its active
	// sessions on an API the policy no longer allows are abandoned, and
	// returned. Durable. Errors: ENOTFOUND (removed devices too); EINVALID
	// for an unknown policy.
	SetDeviceAPI(ctx context.Context, id, policy string) ([]*Session, error)
	// RejectedReleases lists the ids of releases the device rolled back
	// from or refused in an authenticated (native API) session: those are
	// never offered to it again. EcoWatt-API failures earn a Backoff
	// instead.
	RejectedReleases(ctx context.Context, deviceID string) ([]int64, error)
	// Backoffs lists the device's backoffs, expired ones included (their
	// Failures count the doubling), by release id.
	Backoffs(ctx context.Context, deviceID string) ([]*Backoff, error)
	// ClearBackoffs deletes the device's backoffs and records it, so its
	// held-back releases are offered at its next check. Durable. Returns
	// how many there were. Errors: ENOTFOUND for an unknown device.
	ClearBackoffs(ctx context.Context, deviceID string) (int, error)
}

// SessionCaps bound the active sessions an OpenSession may add to; zero
// fields set no bound.
type SessionCaps struct {
	Total int // active sessions on any API
	OnAPI int // active sessions on the new session's API
}

// SessionStore keeps update sessions.
type SessionStore interface {
	// OpenSession stores s (Created, Updated set) after ending the
	// device's other active session as abandoned, with events; opens of
	// one device are serialized. A session on the EcoWatt API never ends a
	// native one: ECONFLICT then. Fast. Errors: EINVALID for an API other
	// than APINative or APIEcoWatt; EUNAVAILABLE past caps;
	// EFORBIDDEN if the device's API policy (read in the same transaction)
	// does not allow s.API; ENOTFOUND for an unknown or removed device;
	// EGONE if the release was withdrawn, or, for a session of a rollout
	// (s.RolloutID), if CheckRolloutOffer refuses (all read in the same
	// transaction, so nothing opens on what an operator just took away).
	// A rollout's session makes its member offered. Every session a store
	// ends as abandoned, here or elsewhere, puts its member (if the
	// member's session still) back to pending.
	OpenSession(ctx context.Context, s *Session, caps SessionCaps) error
	// Session returns a session. Errors: ENOTFOUND.
	Session(ctx context.Context, id string) (*Session, error)
	// ActiveSession returns the device's active session. Errors: ENOTFOUND.
	ActiveSession(ctx context.Context, deviceID string) (*Session, error)
	// ActiveSessions lists active sessions, newest first.
	ActiveSessions(ctx context.Context) ([]*Session, error)
	// RecordProgress applies a batch of progress in one transaction: each
	// session's NextChunk is raised to Next (never lowered, so concurrent or
	// repeated batches are safe; capped at the total) and Bytes added, with
	// a progress event for each quarter mark crossed. Sessions that have
	// ended or do not exist are skipped: progress is advisory. Fast.
	RecordProgress(ctx context.Context, batch []Progress) error
	// SetSessionState applies ch to an active session: its state and
	// reason, the matching event, ch's device changes and, if the session
	// is still its rollout member's, SessionMemberChange (a superseded or
	// removed member stays so). Durable for a move to an end (an outcome:
	// confirmed, rolled back, failed, ...), fast for the steps on the way.
	// Errors: ENOTFOUND; EGONE if the session is not active; EINVALID for
	// a state no session can be moved to, or a ch.Member no session sets.
	SetSessionState(ctx context.Context, id string, ch StateChange) error
	// DeltaFailures lists the base SHA-256s of the device's delta
	// sessions for the release that ended failed: the device gets the
	// full image from then on.
	DeltaFailures(ctx context.Context, deviceID string, releaseID int64) ([]string, error)
	// Traffic sums the bytes sessions were served, delta and full apart.
	Traffic(ctx context.Context, f TrafficFilter) (Traffic, error)
}

// EventStore keeps the history.
type EventStore interface {
	// Events lists events, newest first.
	Events(ctx context.Context, f EventFilter) ([]*Event, error)
	// AddEvent records an event that has no other state change. Durable.
	AddEvent(ctx context.Context, e *Event) error
}

// TokenStore keeps admin tokens, hashed.
type TokenStore interface {
	// CreateToken stores a token (ID and Created are set; Scope "" is
	// stored as ScopeAdmin) and its token-created event. Durable. Errors:
	// ECONFLICT on a duplicate name or hash; EINVALID for an unknown scope.
	CreateToken(ctx context.Context, t *Token) error
	// TokenByHash finds a token, revoked and expired ones too: the caller
	// decides (Token.InForce). Errors: ENOTFOUND.
	TokenByHash(ctx context.Context, hash [32]byte) (*Token, error)
	// Tokens lists tokens by name, revoked ones too; hashes are left out.
	Tokens(ctx context.Context) ([]*Token, error)
	// RevokeToken revokes the token named name (from its next request
	// on, on every replica: tokens are read on every request) and records
	// it. Durable. Errors: ENOTFOUND; ECONFLICT if revoked already.
	RevokeToken(ctx context.Context, name string) error
	// CountTokens returns how many tokens exist, revoked ones too.
	CountTokens(ctx context.Context) (int, error)
}

// NonceStore remembers device request nonces, against replays.
type NonceStore interface {
	// UseNonce records a device request nonce until expires. Durable: a
	// nonce lost to a power cut could be replayed within the clock-skew
	// window once the server is back. Errors: ECONFLICT if the device used
	// it already.
	UseNonce(ctx context.Context, deviceID, nonce string, expires time.Time) error
	// PurgeNonces deletes nonces that expired before t. Fast.
	PurgeNonces(ctx context.Context, t time.Time) error
}

// RetentionStore forgets old history, a small batch per call, so that
// pruning never holds the database for long: the update service decides
// what is due (internal/update's Retention) and calls these a bounded
// number of times per tick. Each call is one transaction and returns how
// many rows it deleted; fewer than batch means nothing more is due. All
// are fast: a prune lost to a power cut is simply done again.
type RetentionStore interface {
	// PruneEvents deletes up to batch events, oldest first, that are
	// older than before (zero time: no age limit) or not among the keep
	// newest (0: no count limit). Events are numbered in the order they
	// are recorded and "newest" goes by that number, so at most keep stay
	// (fewer where the database skipped numbers).
	PruneEvents(ctx context.Context, before time.Time, keep, batch int) (int, error)
	// PruneSessions deletes up to batch prunable sessions (SessionPrunable:
	// ended, and not a native rollback or refusal, which keeps its release
	// from the device), least recently updated first, that were last
	// updated before before (zero: no age limit) or are not among the keep
	// most recently updated prunable ones (0: no count limit). An active
	// session is never deleted.
	PruneSessions(ctx context.Context, before time.Time, keep, batch int) (int, error)
	// PruneRemovedDevices deletes up to batch devices removed before
	// before, with all their sessions and rollout memberships: the
	// tombstone goes once its history has aged out. Their events are
	// PruneEvents' business.
	PruneRemovedDevices(ctx context.Context, before time.Time, batch int) (int, error)
}

// Store is everything the server keeps, one interface per entity.
type Store interface {
	ReleaseStore
	DeviceStore
	SessionStore
	EventStore
	TokenStore
	NonceStore
	RetentionStore
	RolloutStore
	LabelStore
	WebhookStore
	UserStore
	Close() error
}
