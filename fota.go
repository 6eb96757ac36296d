// Package fota holds the domain of the EcoWatt update system: releases,
// devices, update sessions and events, the store interfaces the server is
// built on, and the one error type every layer uses. Implementations live in
// their own packages (internal/sqlite, later internal/postgres); handlers
// see only these interfaces.
package fota

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ecowatt/fota/protocol"
)

// Error codes. Each maps to one HTTP status in internal/server.
const (
	ECONFLICT     = "conflict"       // already exists, or in use
	EINTERNAL     = "internal"       // a server fault; details only in the log
	EINVALID      = "invalid"        // the request is malformed or breaks a rule
	ENOTFOUND     = "not_found"      // no such thing
	EUNAUTHORIZED = "unauthorized"   // missing or wrong credentials
	ETOOLARGE     = "too_large"      // a body over its limit
	EUNAVAILABLE  = "unavailable"    // busy or shutting down: retry later
	EGONE         = "session_closed" // the session ended
)

// Error is an error whose Message is safe to show to the client. The
// cause, if any, is for logs only.
type Error struct {
	Code    string
	Message string
	Cause   error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Cause)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Cause }

// Errorf returns an *Error with a formatted public message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// for any other error, and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the public message of err: the *Error's message, or
// a fixed text for internal errors, which never reach a client.
func ErrorMessage(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Message
	}
	return "internal error"
}

// Release is a published, verified bundle. The ciphertext is in the blob
// store under BlobKey; everything else the server needs is here.
type Release struct {
	ID               int64
	Product          string
	Hardware         string
	Version          string
	SecurityCounter  uint32
	PlaintextSize    int64
	PlaintextSHA256  string
	CiphertextSize   int64
	CiphertextSHA256 string
	ChunkSize        int
	IV               string
	KeyID            string
	SignatureAlg     string
	Notes            string
	Created          time.Time // from the manifest
	Published        time.Time
	ManifestBytes    []byte // exactly as signed
	Signature        []byte
	LegacySignature  []byte // nil for non-RSA releases
	BlobKey          string
}

// Chunks is the number of ChunkSize chunks of the ciphertext.
func (r *Release) Chunks() int {
	return int((r.CiphertextSize + int64(r.ChunkSize) - 1) / int64(r.ChunkSize))
}

// Device is a registered device.
type Device struct {
	ID              string
	Hardware        string
	Version         string // what it last reported or confirmed
	SecurityCounter uint32
	PSK             protocol.PSK
	PinnedVersion   string // "" unless an admin pinned it
	Created         time.Time
	LastSeen        time.Time // zero until its first request
}

// API names a device API.
const (
	APINative  = "native"
	APIEcoWatt = "ecowatt"
)

// Session states. open → downloaded → verified → applied → confirmed is the
// good path; rolled-back, failed and abandoned end a session too.
const (
	SessionOpen       = "open"
	SessionDownloaded = "downloaded"
	SessionVerified   = "verified"
	SessionApplied    = "applied"
	SessionConfirmed  = "confirmed"
	SessionRolledBack = "rolled-back"
	SessionFailed     = "failed"
	SessionAbandoned  = "abandoned"
)

// SessionActive reports whether a session in state s can still progress.
func SessionActive(s string) bool {
	switch s {
	case SessionOpen, SessionDownloaded, SessionVerified, SessionApplied:
		return true
	}
	return false
}

// Session is one device downloading one release.
type Session struct {
	ID             string
	DeviceID       string
	ReleaseID      int64
	ReleaseVersion string // filled in by reads, for display
	API            string
	State          string
	Reason         string // why it failed or rolled back
	NextChunk      int    // lowest chunk index not yet served in order
	TotalChunks    int
	BytesServed    int64
	Created        time.Time
	Updated        time.Time
}

// Percent is the share of chunks served, 0 to 100.
func (s *Session) Percent() float64 {
	if s.TotalChunks == 0 {
		return 0
	}
	return float64(s.NextChunk) * 100 / float64(s.TotalChunks)
}

// Event kinds.
const (
	EventPublished     = "published"
	EventDeviceAdded   = "device-added"
	EventSessionOpened = "session-opened"
	EventProgress      = "progress"
	EventDownloaded    = "downloaded"
	EventVerified      = "verified"
	EventApplied       = "applied"
	EventConfirmed     = "confirmed"
	EventRolledBack    = "rolled-back"
	EventFailed        = "failed"
	EventAbandoned     = "abandoned"
	EventDeleted       = "release-deleted"
	EventAssigned      = "assigned"
)

// stateEvents is the event each session state change records.
var stateEvents = map[string]string{
	SessionDownloaded: EventDownloaded,
	SessionVerified:   EventVerified,
	SessionApplied:    EventApplied,
	SessionConfirmed:  EventConfirmed,
	SessionRolledBack: EventRolledBack,
	SessionFailed:     EventFailed,
	SessionAbandoned:  EventAbandoned,
}

// StateEvent is the event kind a move to state records; false for a
// state a session cannot be moved to.
func StateEvent(state string) (string, bool) {
	kind, ok := stateEvents[state]
	return kind, ok
}

// ProgressEvents are the events a session's progress from its NextChunk to
// next records: one per quarter crossed, so the history shows progress
// without a row per chunk. Every store applies this same rule.
func ProgressEvents(sess *Session, next int, now time.Time) []*Event {
	quarter := func(n int) int {
		if sess.TotalChunks == 0 {
			return 0
		}
		return n * 4 / sess.TotalChunks
	}
	var events []*Event
	for q := quarter(sess.NextChunk) + 1; q <= quarter(next); q++ {
		events = append(events, &Event{Time: now, Kind: EventProgress, DeviceID: sess.DeviceID,
			ReleaseVersion: sess.ReleaseVersion, SessionID: sess.ID, Detail: fmt.Sprintf("%d%% of chunks served", q*25)})
	}
	return events
}

// Progress is what a server served of one session since it last said so.
type Progress struct {
	SessionID string
	Next      int   // the chunks before Next were served
	Bytes     int64 // ciphertext bytes served
}

// Event is one recorded state change.
type Event struct {
	ID             int64
	Time           time.Time
	Kind           string
	DeviceID       string // "" for release-only events
	ReleaseVersion string
	SessionID      string
	Detail         string
}

// EventFilter selects events; zero fields match everything.
type EventFilter struct {
	DeviceID string
	Limit    int // newest first; 0 means 100
}

// Token is an admin API token; only its SHA-256 is stored.
type Token struct {
	ID      int64
	Name    string
	Hash    [32]byte
	Created time.Time
}

// Store is everything the server keeps. Implementations make every method
// atomic: a crash leaves either all of a method's writes or none.
type Store interface {
	// CreateRelease stores r (ID and Published are set) and its published
	// event. Errors: ECONFLICT if r.Hardware and r.Version exist.
	CreateRelease(ctx context.Context, r *Release) error
	// Release returns a release by id. Errors: ENOTFOUND.
	Release(ctx context.Context, id int64) (*Release, error)
	// ReleaseByVersion returns a release. Errors: ENOTFOUND.
	ReleaseByVersion(ctx context.Context, hardware, version string) (*Release, error)
	// Releases lists releases, oldest first; hardware "" lists all.
	Releases(ctx context.Context, hardware string) ([]*Release, error)
	// DeleteRelease removes a release and records it. Errors: ENOTFOUND;
	// ECONFLICT while an active session uses it.
	DeleteRelease(ctx context.Context, id int64) error
	// BlobInUse reports whether any release refers to the blob key.
	BlobInUse(ctx context.Context, key string) (bool, error)

	// CreateDevice stores d (Created is set) and its device-added event.
	// Errors: ECONFLICT if the id exists.
	CreateDevice(ctx context.Context, d *Device) error
	// Device returns a device. Errors: ENOTFOUND.
	Device(ctx context.Context, id string) (*Device, error)
	// Devices lists devices by id.
	Devices(ctx context.Context) ([]*Device, error)
	// DeviceSeen records that a device made a request, reporting version
	// ("" keeps the stored one). Errors: ENOTFOUND.
	DeviceSeen(ctx context.Context, id, version string, at time.Time) error
	// PinDevice pins a device to a release version ("" unpins) and records
	// it. Errors: ENOTFOUND.
	PinDevice(ctx context.Context, id, version string) error
	// RejectedReleases lists release ids a device rolled back from.
	RejectedReleases(ctx context.Context, deviceID string) ([]int64, error)

	// OpenSession stores s (Created, Updated set) after ending any other
	// active session of the device as abandoned, with events. Errors:
	// EUNAVAILABLE if maxActive > 0 active sessions exist already.
	OpenSession(ctx context.Context, s *Session, maxActive int) error
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
	// ended or do not exist are skipped: progress is advisory.
	RecordProgress(ctx context.Context, batch []Progress) error
	// SetSessionState moves an active session to state, with the reason
	// and the matching event. Confirmed also sets the device's version and
	// security counter to the release's. Errors: ENOTFOUND; EGONE if the
	// session is not active.
	SetSessionState(ctx context.Context, id, state, reason string) error

	// Events lists events, newest first.
	Events(ctx context.Context, f EventFilter) ([]*Event, error)
	// AddEvent records an event that has no other state change.
	AddEvent(ctx context.Context, e *Event) error

	// CreateToken stores a token hash. Errors: ECONFLICT on a duplicate hash.
	CreateToken(ctx context.Context, t *Token) error
	// TokenByHash finds a token. Errors: ENOTFOUND.
	TokenByHash(ctx context.Context, hash [32]byte) (*Token, error)
	// CountTokens returns how many tokens exist.
	CountTokens(ctx context.Context) (int, error)

	// UseNonce records a device request nonce until expires. Errors:
	// ECONFLICT if the device used it already (a replay).
	UseNonce(ctx context.Context, deviceID, nonce string, expires time.Time) error
	// PurgeNonces deletes nonces that expired before t.
	PurgeNonces(ctx context.Context, t time.Time) error

	Close() error
}
