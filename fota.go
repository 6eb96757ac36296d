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
	"unicode/utf8"

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
	EFORBIDDEN    = "forbidden"      // authenticated or identified, but not allowed this
	ETOOMANY      = "too_many"       // rate limited: retry after the time the answer gives
)

// Error is an error whose Message is safe to show to the client. The
// cause, if any, is for logs only.
type Error struct {
	Code    string
	Message string
	Cause   error
	// RetryAfter, for ETOOMANY and EUNAVAILABLE, is when to try again.
	RetryAfter time.Duration
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
	// Withdrawn is when an operator withdrew the release (zero while it is
	// offered): it is never offered again, but its row stays for history.
	Withdrawn time.Time
	// Deltas are the release's delta artifacts, one per base image, in the
	// bundle's order: patches a device running exactly that base applies
	// instead of downloading the full image.
	Deltas []ReleaseDelta
}

// ReleaseDelta is a delta artifact of a release: a detools patch from one
// base image to the release's image, encrypted like the full image and
// described by its own signed manifest (which names the base's SHA-256,
// the target's SHA-256 and size, and the compression). Its ciphertext is
// in the blob store under BlobKey.
type ReleaseDelta struct {
	BaseSHA256       string // hex SHA-256 of the image the patch applies onto
	BaseVersion      string
	BaseSize         int64
	Compression      string // heatshrink, crle or none
	PatchSize        int64
	CiphertextSize   int64
	CiphertextSHA256 string
	ManifestBytes    []byte // the delta's own manifest, exactly as signed
	Signature        []byte
	BlobKey          string
}

// Chunks is the number of chunkSize chunks of the delta's ciphertext.
func (d *ReleaseDelta) Chunks(chunkSize int) int {
	return int((d.CiphertextSize + int64(chunkSize) - 1) / int64(chunkSize))
}

// Delta returns the release's delta from the base image with that SHA-256,
// or nil.
func (r *Release) Delta(baseSHA256 string) *ReleaseDelta {
	for i := range r.Deltas {
		if r.Deltas[i].BaseSHA256 == baseSHA256 {
			return &r.Deltas[i]
		}
	}
	return nil
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
	SecurityCounter uint32 // raised only by authenticated confirmations
	PSK             protocol.PSK
	PinnedVersion   string // "" unless an admin pinned it
	// API is the device's API policy: which device APIs may act for it
	// (APINative, APIEcoWatt or APIBoth).
	API      string
	Created  time.Time
	LastSeen time.Time // zero until its first request
	// Removed is when an operator removed the device (zero while it is
	// registered). A removed device is a tombstone: its key authenticates
	// nothing, its id is not registered again, and its history stays until
	// retention prunes it.
	Removed time.Time
	// Labels are the operator's key=value tags, which rollouts select on.
	Labels map[string]string
	// Inventory is what the device last reported about itself.
	Inventory Inventory
}

// API names a device API, and with APIBoth a device's API policy.
const (
	APINative  = "native"
	APIEcoWatt = "ecowatt"
	APIBoth    = "both"
)

// APIPolicies are the values of Device.API.
var APIPolicies = []string{APINative, APIEcoWatt, APIBoth}

// ValidAPIPolicy reports whether p is one of APIPolicies.
func ValidAPIPolicy(p string) bool { return p == APINative || p == APIEcoWatt || p == APIBoth }

// Allows reports whether the device's policy lets requests on api act for
// it. A device stored before policies existed (API "") is native-only.
func (d *Device) Allows(api string) bool {
	return d.API == api || d.API == APIBoth
}

// NativeCapable reports whether the device can authenticate itself: its
// policy includes the native API. Unauthenticated (EcoWatt-API) requests
// never change such a device's recorded version or counter.
func (d *Device) NativeCapable() bool { return d.API != APIEcoWatt }

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
	// SessionNotApplied ends an EcoWatt-API session whose device, after
	// every chunk was served, kept checking in with its old version.
	SessionNotApplied = "not-applied"
	// SessionRefused ends a session whose device would not take the
	// release (it does not fit its slot, it rolled back from it, ...).
	SessionRefused = "refused"
)

// SessionActive reports whether a session in state s can still progress.
func SessionActive(s string) bool {
	switch s {
	case SessionOpen, SessionDownloaded, SessionVerified, SessionApplied:
		return true
	}
	return false
}

// DeviceRemovedConflict is the error for registering an id that belongs
// to a removed device, whose history is still kept under it.
func DeviceRemovedConflict(id string, removed time.Time) *Error {
	return Errorf(ECONFLICT, "device %s was removed at %s and its id is not reused while its history is kept; register the device under a new id",
		id, removed.UTC().Format(time.RFC3339))
}

// DeviceAddedDetail describes a new device for its device-added event.
func DeviceAddedDetail(d *Device) string {
	detail := "hardware " + d.Hardware + ", API " + d.API
	if len(d.Labels) > 0 {
		detail += ", labels " + FormatLabels(d.Labels)
	}
	return detail
}

// WithdrawnReason is why a withdrawn release's sessions ended, as the
// devices in them are told.
func WithdrawnReason(version, reason string) string {
	if reason == "" {
		return "release " + version + " was withdrawn"
	}
	return "release " + version + " was withdrawn: " + reason
}

// SessionExcludes reports whether an ended session keeps its release from
// its device for good: a rollback or refusal the device reported itself,
// authenticated, on the native API (DeviceStore.RejectedReleases reads
// these).
func SessionExcludes(s *Session) bool {
	return s.API == APINative && (s.State == SessionRolledBack || s.State == SessionRefused)
}

// SessionPrunable reports whether retention may delete a session: it has
// ended, and it is not what keeps a release from its device. Every store's
// PruneSessions applies this same rule.
func SessionPrunable(s *Session) bool { return !SessionActive(s.State) && !SessionExcludes(s) }

// stateRank orders the states a session passes through; every end ranks
// above them all.
var stateRank = map[string]int{SessionOpen: 0, SessionDownloaded: 1, SessionVerified: 2, SessionApplied: 3}

// SessionAdvances reports whether moving a session from state from to state
// to is progress. A repeated or out-of-order report ("verified" again, or
// "downloaded" after "applied") is not: it changes nothing and records
// nothing, so a device, or anyone on the EcoWatt API, repeating a report
// cannot grow the history.
func SessionAdvances(from, to string) bool {
	rank := func(s string) int {
		if r, ok := stateRank[s]; ok {
			return r
		}
		return len(stateRank) // an end
	}
	return SessionActive(from) && rank(to) > rank(from)
}

// CheckSessionCaps applies caps to opening a session on api with total
// sessions active, onAPI of them on api: EUNAVAILABLE past a cap.
func CheckSessionCaps(caps SessionCaps, api string, total, onAPI int) error {
	if caps.Total > 0 && total >= caps.Total {
		return Errorf(EUNAVAILABLE, "the server has %d update sessions open, its limit; try again later", total)
	}
	if caps.OnAPI > 0 && onAPI >= caps.OnAPI {
		return Errorf(EUNAVAILABLE, "too many update sessions are open on the %s API; try again later", api)
	}
	return nil
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
	// RolloutID is the rollout the session was opened for; 0 for a pin.
	RolloutID int64
	// DeltaBase is the base SHA-256 of the release delta the session
	// serves (TotalChunks and BytesServed are the delta's); "" when it
	// serves the full image.
	DeltaBase string
	Created   time.Time
	Updated   time.Time
}

// Artifact names what a session serves: ArtifactDelta or ArtifactFull.
func (s *Session) Artifact() string {
	if s.DeltaBase != "" {
		return ArtifactDelta
	}
	return ArtifactFull
}

// What a session serves.
const (
	ArtifactFull  = "full"
	ArtifactDelta = "delta"
)

// TrafficFilter selects the sessions Traffic sums; zero fields select all.
type TrafficFilter struct {
	RolloutID int64
	ReleaseID int64
}

// Traffic is what update sessions put on the wire, by artifact.
type Traffic struct {
	FullSessions  int
	FullBytes     int64 // served to sessions of full images
	DeltaSessions int
	DeltaBytes    int64 // served to sessions of deltas
	// DeltaFailed counts the delta sessions that failed (their devices got
	// the full image next).
	DeltaFailed int
	// DeltaDone counts the delta sessions served in full that did not
	// fail, DeltaDoneBytes what they were served, and DeltaFullBytes what
	// their releases weigh as full images (ciphertext size each): what the
	// deltas saved is DeltaFullBytes - DeltaDoneBytes.
	DeltaDone      int
	DeltaDoneBytes int64
	DeltaFullBytes int64
}

// DeltaSaved is the share of the finished delta sessions' full-image
// bytes their patches did not need, 0 to 1; 0 when none finished.
func (t Traffic) DeltaSaved() float64 {
	if t.DeltaFullBytes <= 0 {
		return 0
	}
	return 1 - float64(t.DeltaDoneBytes)/float64(t.DeltaFullBytes)
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
	EventNotApplied    = "not-applied"
	EventRefused       = "refused"
	EventAPIPolicy     = "api-policy"
	EventBackoffClear  = "backoff-cleared"
	EventTokenCreated  = "token-created"
	EventTokenRevoked  = "token-revoked"
	EventWithdrawn     = "release-withdrawn"
	EventDeviceRemoved = "device-removed"
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
	SessionNotApplied: EventNotApplied,
	SessionRefused:    EventRefused,
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
		events = append(events, &Event{Time: now, Kind: EventProgress, DeviceID: sess.DeviceID, ReleaseVersion: sess.ReleaseVersion,
			SessionID: sess.ID, RolloutID: sess.RolloutID, API: sess.API, Detail: fmt.Sprintf("%d%% of chunks served", q*25)})
	}
	return events
}

// StateChange is a move of an active session to an end or a later state,
// with what else it changes in the same transaction. The update service
// decides each field; stores only apply them.
type StateChange struct {
	State  string
	Reason string
	// RecordVersion sets the device's version to the release's (with
	// State confirmed); RecordCounter also raises its security counter to
	// the release's. Both only where the report can be trusted.
	RecordVersion bool
	RecordCounter bool
	// Backoff, if set, is stored (replacing the device's backoff for that
	// release) with the change.
	Backoff *Backoff
	// Member is the state the session's rollout member moves to; "" for
	// MemberStateFor(State).
	Member string
}

// Backoff holds a release back from a device until a time: what an
// unauthenticated failure report earns instead of a permanent exclusion.
type Backoff struct {
	DeviceID       string
	ReleaseID      int64
	ReleaseVersion string // filled in by reads, for display
	Failures       int    // reported failures in a row, for the doubling
	Until          time.Time
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
	// Actor is who made the change, for changes an operator made
	// ("token:ci", "token:admin"); "" for devices and the server itself.
	Actor string
	// RolloutID names the rollout of a rollout event, or of the session.
	RolloutID int64
	// API is the device API of the session a session event is about
	// ("" for other events): an "ecowatt" event came from requests that
	// cannot be authenticated.
	API string
}

// EventFilter selects events; zero fields match everything.
type EventFilter struct {
	DeviceID  string
	Kind      string
	RolloutID int64
	Actor     string
	// AfterID and BeforeID keep only events numbered above or below them
	// (0: no bound): the dashboard pages through the log with BeforeID
	// and follows it live with AfterID.
	AfterID, BeforeID int64
	Limit             int // newest first; 0 means 100
}

// Token scopes, each allowing what the ones below it allow.
const (
	ScopeAdmin   = "admin"   // every admin request: publish, devices, tokens, ...
	ScopeRead    = "read"    // admin API reads (GET) and /metrics
	ScopeMetrics = "metrics" // /metrics only
)

// Scopes are the token scopes, widest first.
var Scopes = []string{ScopeAdmin, ScopeRead, ScopeMetrics}

// ValidScope reports whether s is one of Scopes.
func ValidScope(s string) bool { return scopeRank[s] > 0 }

// Token is an admin API token; only its SHA-256 is stored.
type Token struct {
	ID      int64
	Name    string // unique
	Hash    [32]byte
	Scope   string // ScopeAdmin ("" is stored as it), ScopeRead or ScopeMetrics
	Created time.Time
	Expires time.Time // zero: never
	Revoked time.Time // zero: in force
}

// scopeRank orders the scopes: each allows what those below it do.
var scopeRank = map[string]int{ScopeMetrics: 1, ScopeRead: 2, ScopeAdmin: 3}

// Allows reports whether the token's scope covers scope.
func (t *Token) Allows(scope string) bool {
	return scopeRank[t.Scope] >= scopeRank[scope] && scopeRank[scope] > 0
}

// InForce reports whether the token can be used at now: not revoked, not
// expired.
func (t *Token) InForce(now time.Time) bool {
	return t.Revoked.IsZero() && (t.Expires.IsZero() || now.Before(t.Expires))
}

// PrepareToken checks a token before a store keeps it, defaulting its
// scope to ScopeAdmin.
func PrepareToken(t *Token) error {
	if t.Scope == "" {
		t.Scope = ScopeAdmin
	}
	if !ValidScope(t.Scope) {
		return Errorf(EINVALID, "token scope %q: want admin, read or metrics", t.Scope)
	}
	if !ValidTokenName(t.Name) {
		return Errorf(EINVALID, "token name %q: want 1-64 characters of A-Z a-z 0-9 _ . - (not . or ..)", t.Name)
	}
	return nil
}

// TokenCreatedEvent is the event a new token records: never its text.
func TokenCreatedEvent(t *Token) *Event {
	detail := "token " + t.Name + ", scope " + t.Scope
	if !t.Expires.IsZero() {
		detail += ", expires " + t.Expires.UTC().Format(time.RFC3339)
	}
	return &Event{Time: t.Created, Kind: EventTokenCreated, Detail: detail}
}

// actorKey carries who makes a change through a context.
type actorKey struct{}

// WithActor returns ctx saying who makes the changes done with it (for an
// admin request, "token:NAME"): stores record it on the events they add.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// ActorFrom is who WithActor said makes the changes, or "".
func ActorFrom(ctx context.Context) string {
	a, _ := ctx.Value(actorKey{}).(string)
	return a
}

// PlainText reports whether s is text a person can be shown as it is: no
// control characters (line breaks, escape sequences) that would let one
// record pass for several, or hide itself, in a terminal or a log.
func PlainText(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError {
			return false
		}
	}
	return true
}

// ValidTokenName reports whether name can name a token: 1-64 characters of
// A-Z a-z 0-9 _ . -, as device ids, and not "." or ".." (a path segment).
func ValidTokenName(name string) bool {
	if name == "" || len(name) > 64 || name == "." || name == ".." {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}
