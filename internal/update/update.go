// Package update is the update service: the one place where a device's
// fate is decided and recorded. Both device APIs (internal/server's
// ecowatt.go and native.go) are thin adapters over it; it knows nothing of
// HTTP.
//
// Its rules, each here and nowhere else:
//
//   - API policy: a device is served only on the APIs its policy allows
//     (native, ecowatt or both); anything else is EFORBIDDEN.
//   - Trust: native requests are authenticated as the device; EcoWatt-API
//     requests are not, so nothing they cause is permanent, and they never
//     touch a native session or a native-capable device's recorded version
//     or security counter. An authenticated rollback excludes a release
//     for the device for good; an EcoWatt-API failure report backs it off
//     for that device on that API (doubling from BackoffBase to BackoffMax).
//   - Security counter: no release whose counter is below the device's
//     (stored from authenticated confirmations, or reported by an
//     authenticated check-in) is offered.
//   - EcoWatt API: only releases the original firmware can take (a legacy
//     RSA signature, chunks of at most MaxLegacyChunkSize); new sessions
//     rate limited per device and overall; outcomes read from check-ins,
//     since the original firmware reports none.
package update

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
	"github.com/ecowatt/fota/semver"
)

// MaxLegacyChunkSize is the largest chunk the original EcoWatt firmware can
// take: it decodes a chunk into a buffer of 1,024 + 16 bytes.
const MaxLegacyChunkSize = 1024

// Defaults of Config.
const (
	DefaultBackoffBase = time.Hour
	DefaultBackoffMax  = 24 * time.Hour
	// DefaultNotAppliedGrace is how long after its last chunk an EcoWatt-API
	// device may still check in with its old version before its session
	// counts as not applied: time to verify, write and reboot.
	DefaultNotAppliedGrace = 15 * time.Minute
)

// LegacyShareOfSessions is the percentage of Config.MaxSessions that
// EcoWatt-API sessions may take.
const LegacyShareOfSessions = 75

// LegacyCap is how many of maxSessions EcoWatt-API sessions may take: the
// share, and never the last place. maxSessions must be 0 (no cap) or at
// least 2 for a place to be kept for native devices.
func LegacyCap(maxSessions int) int {
	return max(1, min(maxSessions-1, maxSessions*LegacyShareOfSessions/100))
}

// DefaultLegacyPerDevice lets one device open 3 new EcoWatt-API sessions
// in a row and then one every 10 minutes: a device that really updates needs
// one, and one that fails is backed off for an hour anyway.
var DefaultLegacyPerDevice = Rate{Burst: 3, Every: 10 * time.Minute}

// DefaultLegacyOverall lets a fleet of 2,000 start in a burst, then 20
// new EcoWatt-API sessions a second.
var DefaultLegacyOverall = Rate{Burst: 2000, Every: 50 * time.Millisecond}

// SessionCache is what a server keeps of sessions and devices in memory;
// the service tells it when they change.
type SessionCache interface {
	// Flush writes what this replica holds of a session's progress, before
	// its state changes, so history keeps its order.
	Flush(ctx context.Context, sessionID string)
	// Forget drops what is cached of a session after it changed.
	Forget(sess *fota.Session)
	// Opened notes a session this replica just opened.
	Opened(sess *fota.Session)
	// ForgetDevice drops what is cached of a device after it changed.
	ForgetDevice(id string)
}

// Config configures a Service.
type Config struct {
	Store  fota.Store
	Logger *slog.Logger
	Now    func() time.Time // time.Now by default
	// Release reads a release by id; the store's Release by default. A
	// server passes the cache its chunk requests read through.
	Release func(ctx context.Context, id int64) (*fota.Release, error)
	// MaxSessions caps concurrently active update sessions (0: no cap).
	MaxSessions int
	// Cache is told of changes; none by default.
	Cache SessionCache
	// LegacyPerDevice and LegacyOverall bound how fast EcoWatt-API
	// check-ins open sessions (DefaultLegacyPerDevice, DefaultLegacyOverall
	// when zero).
	LegacyPerDevice, LegacyOverall Rate
	// BackoffBase and BackoffMax shape the backoff after an EcoWatt-API
	// failure report (defaults above).
	BackoffBase, BackoffMax time.Duration
	// NotAppliedGrace: DefaultNotAppliedGrace when zero.
	NotAppliedGrace time.Duration
	// OnStateChange, if set, is called after each session state change
	// (for metrics).
	OnStateChange func(state, api string)
	// Notifier wakes the devices a change concerns (notify.go); none by
	// default: devices check on their timer.
	Notifier fota.Notifier
	// NotifyRate: DefaultNotifyRate when zero.
	NotifyRate int
}

// Service is the update service.
type Service struct {
	store       fota.Store
	log         *slog.Logger
	now         func() time.Time
	release     func(ctx context.Context, id int64) (*fota.Release, error)
	windows     windowCache
	maxSessions int
	cache       SessionCache
	limiter     *limiter
	backoffBase time.Duration
	backoffMax  time.Duration
	grace       time.Duration
	onChange    func(state, api string)
	notifier    fota.Notifier
	notifyRate  int
	notifying   sync.WaitGroup
	// lastWindowTick is the previous rollout tick, to see which
	// maintenance windows opened since (notifyOpenedWindows).
	windowTickMu   sync.Mutex
	lastWindowTick time.Time
}

// New returns a Service for cfg.
func New(cfg Config) *Service {
	s := &Service{store: cfg.Store, log: cfg.Logger, now: cfg.Now, maxSessions: cfg.MaxSessions, cache: cfg.Cache,
		backoffBase: cfg.BackoffBase, backoffMax: cfg.BackoffMax, grace: cfg.NotAppliedGrace, onChange: cfg.OnStateChange,
		notifier: cfg.Notifier, notifyRate: cfg.NotifyRate}
	if s.notifyRate <= 0 {
		s.notifyRate = DefaultNotifyRate
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.release = cfg.Release; s.release == nil {
		s.release = cfg.Store.Release
	}
	if s.cache == nil {
		s.cache = noCache{}
	}
	if s.backoffBase <= 0 {
		s.backoffBase = DefaultBackoffBase
	}
	if s.backoffMax <= 0 {
		s.backoffMax = DefaultBackoffMax
	}
	if s.grace <= 0 {
		s.grace = DefaultNotAppliedGrace
	}
	perDevice, overall := cfg.LegacyPerDevice, cfg.LegacyOverall
	if perDevice.Burst <= 0 || perDevice.Every <= 0 {
		perDevice = DefaultLegacyPerDevice
	}
	if overall.Burst <= 0 || overall.Every <= 0 {
		overall = DefaultLegacyOverall
	}
	s.limiter = newLimiter(perDevice, overall)
	return s
}

type noCache struct{}

func (noCache) Flush(context.Context, string) {}
func (noCache) Forget(*fota.Session)          {}
func (noCache) Opened(*fota.Session)          {}
func (noCache) ForgetDevice(string)           {}

// Admit applies a device's API policy to a request on api: nil, or
// EFORBIDDEN with what to do about it.
func Admit(d *fota.Device, api string) error {
	if d.Allows(api) {
		return nil
	}
	if api == fota.APIEcoWatt {
		return fota.Errorf(fota.EFORBIDDEN, "device %s is registered for the native API only, so the EcoWatt API (/ota/*) cannot act for it; "+
			"if it runs the original EcoWatt firmware, an operator can allow it: fota device set --id %s --api ecowatt (or both)", d.ID, d.ID)
	}
	return fota.Errorf(fota.EFORBIDDEN, "device %s is registered for the EcoWatt API only; an operator can allow the native API: "+
		"fota device set --id %s --api native (or both)", d.ID, d.ID)
}

// CheckIn is a device asking for an update.
type CheckIn struct {
	DeviceID string
	// Device is the device as authentication just read it; nil to read it.
	Device *fota.Device
	// API is the API it came on. Native check-ins are authenticated.
	API      string
	Running  string // the version it runs
	Hardware string // what it reports, "" if nothing
	// SecurityCounter is what an authenticated device reports as its own.
	SecurityCounter uint32
	// Inventory is what an authenticated device tells about itself; nil
	// if nothing.
	Inventory *fota.Inventory
	// ImageSHA256 is the hex SHA-256 of the image an authenticated device
	// runs, and DeltaCompressions the patch compressions it applies: with
	// both, a release's delta from exactly that image may be offered.
	ImageSHA256       string
	DeltaCompressions []string
}

// Offer is an update a device should take, in a session.
type Offer struct {
	Release *fota.Release
	Session *fota.Session
	// InstallAfter and InstallUntil bound when the device may install it
	// (zero: no bound), from its rollout's maintenance windows.
	InstallAfter, InstallUntil time.Time
}

// Check decides whether the device gets an update: an Offer, or nil with
// the reason it gets none.
func (s *Service) Check(ctx context.Context, c CheckIn) (*Offer, string, error) {
	if _, err := semver.Parse(c.Running); err != nil {
		return nil, "", fota.Errorf(fota.EINVALID, "running version %q is not a semantic version like 1.0.4", truncate(c.Running, 40))
	}
	authenticated := c.API == fota.APINative
	d := c.Device
	if d == nil {
		var err error
		if d, err = s.store.Device(ctx, c.DeviceID); err != nil {
			return nil, "", err
		}
	}
	if !d.Removed.IsZero() {
		return nil, "", removedError(d.ID)
	}
	if err := s.admit(d, c.API); err != nil {
		return nil, "", err
	}
	if c.Hardware != "" && c.Hardware != d.Hardware {
		return nil, "", fota.Errorf(fota.EINVALID, "device reports hardware %q but is registered as %q", truncate(c.Hardware, 32), d.Hardware)
	}
	now := s.now()
	// A native-capable device's version and last-seen time are what it
	// says when it proves who it is: an unauthenticated request changes
	// neither.
	if authenticated || !d.NativeCapable() {
		// What a device tells about itself is written with its check-in,
		// and only when it changed: one write either way.
		var inv *fota.Inventory
		if authenticated && c.Inventory != nil && !sameInventory(*c.Inventory, d.Inventory) {
			inv = c.Inventory
		}
		if err := s.store.DeviceSeen(ctx, d.ID, c.Running, inv, now); err != nil {
			return nil, "", err
		}
		if inv != nil {
			s.cache.ForgetDevice(d.ID)
		}
	}
	offer, why, err := s.offer(ctx, c, d, authenticated, now)
	if offer == nil && err == nil && !authenticated {
		why = s.public(d, c.Running, why)
	}
	return offer, why, err
}

// offer is Check's decision for an admitted device: an Offer, or nil with
// the reason (which Check passes through public for unauthenticated
// callers, whatever the reason).
func (s *Service) offer(ctx context.Context, c CheckIn, d *fota.Device, authenticated bool, now time.Time) (*Offer, string, error) {
	var active *fota.Session
	var err error
	if !authenticated {
		// The original firmware reports no outcome: its check-ins tell it.
		if active, err = s.activeSession(ctx, d.ID); err != nil {
			return nil, "", err
		}
		if active != nil && active.API == fota.APIEcoWatt {
			if active, err = s.legacyOutcome(ctx, d, active, c.Running, now); err != nil {
				return nil, "", err
			}
		}
	}
	dec, err := s.decide(ctx, Request{Device: d, Running: c.Running, API: c.API, Now: now})
	if !authenticated && dec.Reason != "" {
		if public := dec.PublicReason(c.Running); public != dec.Reason {
			s.log.Info("no update on the EcoWatt API", "device_id", d.ID, "reason", dec.Reason)
			dec.Reason = public
		}
	}
	if err != nil || dec.Release == nil {
		return nil, dec.Reason, err
	}
	rel := dec.Release
	if authenticated {
		// Most check-ins get no update: the session is read only for those
		// that do.
		if active, err = s.activeSession(ctx, d.ID); err != nil {
			return nil, "", err
		}
	}
	floor := d.SecurityCounter
	if authenticated {
		floor = max(floor, c.SecurityCounter)
	}
	if rel.SecurityCounter < floor {
		return nil, fmt.Sprintf("release %s has security counter %d, below the device's %d; publish a release with a counter of at least %d",
			rel.Version, rel.SecurityCounter, floor, floor), nil
	}
	if !authenticated {
		if why := legacyServable(rel); why != "" {
			return nil, why, nil
		}
	}
	if active != nil && active.ReleaseID == rel.ID && active.API == c.API {
		return &Offer{Release: rel, Session: active, InstallAfter: dec.InstallAfter, InstallUntil: dec.InstallUntil}, "", nil
	}
	if dec.ResumeOnly {
		return nil, dec.Reason, nil
	}
	if active != nil && !authenticated && active.API != fota.APIEcoWatt {
		return nil, fmt.Sprintf("an update to %s is in progress on the native API; the EcoWatt API does not interrupt it", active.ReleaseVersion), nil
	}
	if !authenticated {
		if ok, wait := s.limiter.allow(d.ID, now); !ok {
			s.log.Warn("EcoWatt-API session refused: rate limit", "device_id", d.ID, "retry_after", wait.Round(time.Second))
			return nil, "", &fota.Error{Code: fota.ETOOMANY, RetryAfter: wait,
				Message: fmt.Sprintf("too many update sessions opened for this device or server; check again in %s", wait.Round(time.Second)+time.Second)}
		}
	}
	var patch *fota.ReleaseDelta
	if authenticated {
		if patch, err = s.pickDelta(ctx, c, d, rel); err != nil {
			return nil, "", err
		}
	}
	sess, err := s.open(ctx, d, rel, patch, dec.RolloutID, c.API, active)
	if err != nil && !authenticated {
		s.limiter.refund(d.ID)
	}
	switch code := fota.ErrorCode(err); {
	case code == fota.ECONFLICT && !authenticated:
		// A native session opened meanwhile: it wins.
		return nil, fota.ErrorMessage(err), nil
	case code == fota.EGONE:
		// Withdrawn between the decision and the open: nothing to offer.
		return nil, fota.ErrorMessage(err), nil
	case err != nil:
		return nil, "", err
	}
	return &Offer{Release: rel, Session: sess, InstallAfter: dec.InstallAfter, InstallUntil: dec.InstallUntil}, "", nil
}

// activeSession is the device's active session, or nil.
func (s *Service) activeSession(ctx context.Context, deviceID string) (*fota.Session, error) {
	sess, err := s.store.ActiveSession(ctx, deviceID)
	if fota.ErrorCode(err) == fota.ENOTFOUND {
		return nil, nil
	}
	return sess, err
}

// sameInventory compares what devices report, not when.
func sameInventory(a, b fota.Inventory) bool {
	a.Updated, b.Updated = time.Time{}, time.Time{}
	return a == b
}

// public is why a device gets no update, as an unauthenticated request may
// be told it. What the native side of a device allowed both APIs does (its
// sessions, rollbacks, pin, counter) is not the business of anyone who
// merely knows its id: they get a plain answer, and the log the reason.
func (s *Service) public(d *fota.Device, running, why string) string {
	if !d.NativeCapable() {
		return why
	}
	s.log.Info("no update on the EcoWatt API", "device_id", d.ID, "reason", why)
	// The same words as a rollout's private reasons get (PublicReason), so
	// the answer does not tell which policy the device has either.
	return Decision{operatorsOnly: true}.PublicReason(running)
}

// legacyServable says why the original firmware cannot take rel, or "".
func legacyServable(rel *fota.Release) string {
	if rel.LegacySignature == nil {
		return fmt.Sprintf("release %s is signed with %s and has no legacy RSA signature, so it is served only on the native API (/v1)",
			rel.Version, rel.SignatureAlg)
	}
	if rel.ChunkSize > MaxLegacyChunkSize {
		return fmt.Sprintf("release %s has %d-byte chunks and the original EcoWatt firmware takes at most %d, so it is served only on the native API (/v1)",
			rel.Version, rel.ChunkSize, MaxLegacyChunkSize)
	}
	return ""
}

// LegacyServable reports whether the original EcoWatt firmware can take
// rel, and if not, why.
func LegacyServable(rel *fota.Release) (bool, string) {
	why := legacyServable(rel)
	return why == "", why
}

// legacyOutcome reads an outcome from an EcoWatt-API check-in: running the
// session's target confirms it; still running something else once every
// chunk was served and the grace has passed means it was not applied. It
// returns the session if it is still active, else nil.
func (s *Service) legacyOutcome(ctx context.Context, d *fota.Device, sess *fota.Session, running string, now time.Time) (*fota.Session, error) {
	fresh, err := s.served(ctx, sess)
	if err != nil || !fota.SessionActive(fresh.State) {
		return nil, err
	}
	// Only a device that was served every chunk can run the image: a claim
	// before that ends nothing, so a forged one cannot make the device open
	// (and pay for) a new session.
	if fresh.NextChunk < fresh.TotalChunks {
		return fresh, nil
	}
	if sameVersion(running, fresh.ReleaseVersion) {
		err := s.setState(ctx, d, fresh, fota.StateChange{State: fota.SessionConfirmed, Reason: "device checked in running " + running,
			RecordVersion: !d.NativeCapable()})
		return nil, goneIsDone(err)
	}
	if now.Sub(fresh.Updated) < s.grace {
		return fresh, nil
	}
	ch := fota.StateChange{State: fota.SessionNotApplied,
		Reason: fmt.Sprintf("device still checks in running %s %s after the last chunk was served", truncate(running, 40), now.Sub(fresh.Updated).Round(time.Minute))}
	if ch.Backoff, err = s.backoff(ctx, d, fresh, now); err != nil {
		return nil, err
	}
	return nil, goneIsDone(s.setState(ctx, d, fresh, ch))
}

// served reads a session afresh, with what this replica served of it.
func (s *Service) served(ctx context.Context, sess *fota.Session) (*fota.Session, error) {
	s.cache.Flush(ctx, sess.ID)
	return s.store.Session(ctx, sess.ID)
}

// goneIsDone treats a session that ended meanwhile (another replica, a
// concurrent request) as done.
func goneIsDone(err error) error {
	if fota.ErrorCode(err) == fota.EGONE {
		return nil
	}
	return err
}

// backoff is the backoff an unauthenticated failure of sess earns: the
// previous one's duration doubled, from backoffBase up to backoffMax.
// Backoffs bind only the EcoWatt API (withheld), so a forged report
// holds nothing back from a device's native updates.
func (s *Service) backoff(ctx context.Context, d *fota.Device, sess *fota.Session, now time.Time) (*fota.Backoff, error) {
	prev, err := s.store.Backoffs(ctx, d.ID)
	if err != nil {
		return nil, err
	}
	failures := 1
	for _, b := range prev {
		if b.ReleaseID == sess.ReleaseID {
			failures = b.Failures + 1
		}
	}
	wait := s.backoffBase
	for i := 1; i < failures && wait < s.backoffMax; i++ {
		wait *= 2
	}
	wait = min(wait, s.backoffMax)
	return &fota.Backoff{DeviceID: d.ID, ReleaseID: sess.ReleaseID, ReleaseVersion: sess.ReleaseVersion, Failures: failures, Until: now.Add(wait)}, nil
}

// pickDelta is the delta of rel a session for the device should serve, or
// nil for the full image: the device must run exactly the delta's base
// (the SHA-256 it reported), apply its compression, and not have failed
// that delta before; after a failed delta the full image always follows.
func (s *Service) pickDelta(ctx context.Context, c CheckIn, d *fota.Device, rel *fota.Release) (*fota.ReleaseDelta, error) {
	if c.ImageSHA256 == "" || len(rel.Deltas) == 0 {
		return nil, nil
	}
	patch := rel.Delta(c.ImageSHA256)
	if patch == nil || !slices.Contains(c.DeltaCompressions, patch.Compression) {
		return nil, nil
	}
	failed, err := s.store.DeltaFailures(ctx, d.ID, rel.ID)
	if err != nil {
		return nil, fmt.Errorf("choose delta or full image for %s: %w", d.ID, err)
	}
	if slices.Contains(failed, patch.BaseSHA256) {
		return nil, nil
	}
	return patch, nil
}

// open opens a session for rel, ending the device's active one. It serves
// patch when one is given, else the full image.
func (s *Service) open(ctx context.Context, d *fota.Device, rel *fota.Release, patch *fota.ReleaseDelta, rolloutID int64, api string, active *fota.Session) (*fota.Session, error) {
	id, err := newSessionID()
	if err != nil {
		return nil, err
	}
	sess := &fota.Session{ID: id, DeviceID: d.ID, ReleaseID: rel.ID, ReleaseVersion: rel.Version, API: api, TotalChunks: rel.Chunks(), RolloutID: rolloutID}
	if patch != nil {
		sess.DeltaBase, sess.TotalChunks = patch.BaseSHA256, patch.Chunks(rel.ChunkSize)
	}
	caps := fota.SessionCaps{Total: s.maxSessions}
	if api == fota.APIEcoWatt && s.maxSessions > 0 {
		// Unauthenticated check-ins may fill only part of the cap, so that
		// forged ones can never keep native devices from updating.
		caps.OnAPI = LegacyCap(s.maxSessions)
	}
	if err := s.store.OpenSession(ctx, sess, caps); err != nil {
		return nil, err
	}
	if active != nil {
		s.cache.Flush(ctx, active.ID)
		s.cache.Forget(active)
	}
	s.cache.Forget(sess)
	s.cache.Opened(sess)
	s.log.Info("session opened", "device_id", d.ID, "session_id", id, "release_version", rel.Version, "api", api, "artifact", sess.Artifact())
	return sess, nil
}

// Report is a device's report of how its update went.
type Report struct {
	// Session is the session reported on; the adapter found it by the
	// device it authenticated (native) or named (EcoWatt).
	Session *fota.Session
	// API is the API the report came on. Native reports are authenticated.
	API    string
	State  string // a session state
	Reason string
	// Version is the release the device says the report is about (native
	// API, optional): it must be the session's.
	Version string
	// DeltaFailure: the device says the failure is the delta's, not the
	// release's (native API only).
	DeltaFailure bool
}

// Report records a device's report.
func (s *Service) Report(ctx context.Context, r Report) error {
	sess := r.Session
	authenticated := r.API == fota.APINative
	if sess.API != r.API {
		// Never reachable through the adapters, which look sessions up by
		// API; kept here because it is the rule.
		return fota.Errorf(fota.ENOTFOUND, "device %q has no open session on this API", sess.DeviceID)
	}
	d, err := s.store.Device(ctx, sess.DeviceID)
	if err != nil {
		return err
	}
	if !d.Removed.IsZero() {
		return removedError(d.ID)
	}
	if err := s.admit(d, r.API); err != nil {
		return err
	}
	if r.Version != "" && r.Version != sess.ReleaseVersion {
		// The device judged another release than this session's: its check
		// answer was altered on the way. Recording it (a refusal excludes
		// the release for good) would let that alteration decide.
		return fota.Errorf(fota.EINVALID, "the report is about release %s, session %s is for %s: not recorded (was the check answer altered on the way?)",
			truncate(r.Version, 64), sess.ID, sess.ReleaseVersion)
	}
	ch := fota.StateChange{State: r.State, Reason: r.Reason}
	switch {
	case r.State == fota.SessionFailed && authenticated && sess.DeltaBase != "":
		// A patch that failed on the device (it does not fit what the device
		// runs, or its image failed the hash) says nothing about the
		// release: the device stays pending, and its next check gets the
		// full image (pickDelta reads this failure).
		ch.Member = fota.MemberPending
		ch.Reason = "delta failed, the full image is offered next: " + r.Reason
	case r.State == fota.SessionFailed && authenticated && r.DeltaFailure:
		// A full image's session the device failed on delta grounds: its
		// answer came with delta fields it never had, altered on the way.
		// Nothing is known against the release; the device stays pending.
		ch.Member = fota.MemberPending
		ch.Reason = "the device found delta fields in a full image's answer (altered on the way?): " + r.Reason
	case r.State == fota.SessionConfirmed && authenticated:
		ch.RecordVersion, ch.RecordCounter = true, true
	case r.State == fota.SessionConfirmed:
		fresh, err := s.served(ctx, sess)
		if err != nil {
			return err
		}
		if fresh.NextChunk < fresh.TotalChunks {
			return fota.Errorf(fota.ECONFLICT, "device %s was served %d of the %d chunks of %s; report success after installing all of it",
				d.ID, fresh.NextChunk, fresh.TotalChunks, fresh.ReleaseVersion)
		}
		ch.RecordVersion = !d.NativeCapable()
	case !authenticated && (r.State == fota.SessionRolledBack || r.State == fota.SessionFailed):
		if ch.Backoff, err = s.backoff(ctx, d, sess, s.now()); err != nil {
			return err
		}
		if sess.RolloutID != 0 {
			// Anyone who knows a device id can send this report: it counts
			// against the rollout's gate only from a device that fetched the
			// whole image, as one that really failed to install it did.
			fresh, err := s.served(ctx, sess)
			if err != nil {
				return err
			}
			if fresh.NextChunk < fresh.TotalChunks {
				ch.Member = fota.MemberPending
			}
		}
		ch.Reason += fmt.Sprintf("; release held back from this device on the EcoWatt API until %s", ch.Backoff.Until.UTC().Format(time.RFC3339))
	}
	return s.setState(ctx, d, sess, ch)
}

// setState applies a state change, keeping the cache in step.
func (s *Service) setState(ctx context.Context, d *fota.Device, sess *fota.Session, ch fota.StateChange) error {
	s.cache.Flush(ctx, sess.ID)
	err := s.store.SetSessionState(ctx, sess.ID, ch)
	s.cache.Forget(sess)
	if err == nil {
		if s.onChange != nil {
			s.onChange(ch.State, sess.API)
		}
		s.log.Info("update "+ch.State, "device_id", d.ID, "session_id", sess.ID, "release_version", sess.ReleaseVersion, "api", sess.API)
		if sess.RolloutID != 0 && fota.MemberStateFor(ch.State) == fota.MemberFailed && ch.Member == "" {
			// A failure may trip the rollout's gate: halt now, not at the
			// next tick, so fewer devices start a bad release. Other
			// outcomes can only let a wave open, which the tick does.
			s.evaluateRolloutID(ctx, sess.RolloutID)
		}
	}
	return err
}

// admit is Admit, logged when it refuses.
func (s *Service) admit(d *fota.Device, api string) error {
	err := Admit(d, api)
	if err != nil {
		s.log.Warn("request refused by the device's API policy", "device_id", d.ID, "api", api, "policy", d.API)
	}
	return err
}

// SetAPIPolicy changes a device's API policy; its sessions on an API the
// policy no longer allows end at once.
func (s *Service) SetAPIPolicy(ctx context.Context, id, policy string) error {
	ended, err := s.store.SetDeviceAPI(ctx, id, policy)
	if err != nil {
		return err
	}
	for _, sess := range ended {
		s.cache.Forget(sess)
	}
	s.cache.ForgetDevice(id)
	s.log.Info("API policy changed", "device_id", id, "policy", policy, "sessions_ended", len(ended))
	return nil
}

// Pin pins a device to a release version, refusing one that could never
// take effect: not published for its hardware, not newer than what it
// runs, below its security counter, or rolled back from on the native API.
func (s *Service) Pin(ctx context.Context, id, version string) error {
	d, err := s.store.Device(ctx, id)
	if err != nil {
		return err
	}
	if !d.Removed.IsZero() {
		return removedError(d.ID)
	}
	rel, err := s.store.ReleaseByVersion(ctx, d.Hardware, version)
	if fota.ErrorCode(err) == fota.ENOTFOUND {
		return fota.Errorf(fota.EINVALID, "no release %s for %s to pin to; publish it first", truncate(version, 40), d.Hardware)
	}
	if err != nil {
		return err
	}
	if !rel.Withdrawn.IsZero() {
		return fota.Errorf(fota.EINVALID, "release %s for %s was withdrawn at %s and is never offered; pin another release",
			rel.Version, rel.Hardware, rel.Withdrawn.UTC().Format(time.RFC3339))
	}
	running, errR := semver.Parse(d.Version)
	target, errT := semver.Parse(rel.Version)
	if errR == nil && errT == nil && semver.Compare(target, running) <= 0 {
		return fota.Errorf(fota.EINVALID, "device %s runs %s; a pin to %s, not newer, would never be offered (devices never downgrade)",
			d.ID, d.Version, rel.Version)
	}
	if rel.SecurityCounter < d.SecurityCounter {
		return fota.Errorf(fota.EINVALID, "release %s has security counter %d, below device %s's %d: it would never be offered",
			rel.Version, rel.SecurityCounter, d.ID, d.SecurityCounter)
	}
	rejected, err := s.store.RejectedReleases(ctx, d.ID)
	if err != nil {
		return err
	}
	for _, r := range rejected {
		if r == rel.ID {
			return fota.Errorf(fota.EINVALID, "device %s rolled back from %s; it is never offered again: publish a fixed release", d.ID, rel.Version)
		}
	}
	if err := s.store.PinDevice(ctx, d.ID, rel.Version); err != nil {
		return err
	}
	s.log.Info("device pinned", "device_id", d.ID, "release_version", rel.Version)
	s.notify([]string{d.ID}, protocol.NotifyPinned, 0)
	return nil
}

// Unpin removes a device's pin: it gets what rollouts give it again.
func (s *Service) Unpin(ctx context.Context, id string) error {
	if err := s.store.PinDevice(ctx, id, ""); err != nil {
		return err
	}
	s.cache.ForgetDevice(id)
	s.log.Info("device unpinned", "device_id", id)
	s.notify([]string{id}, protocol.NotifyPinned, 0)
	return nil
}

// ClearBackoffs offers a device's held-back releases again, and lets it
// open a full burst of EcoWatt-API sessions again (on this replica: the
// limits are kept in memory), so an operator's retry is not refused.
func (s *Service) ClearBackoffs(ctx context.Context, id string) (int, error) {
	n, err := s.store.ClearBackoffs(ctx, id)
	if err == nil {
		s.limiter.reset(id)
		s.log.Info("backoffs cleared", "device_id", id, "count", n)
	}
	return n, err
}

// removedError is what a request for a removed device gets: the same as
// for an unknown one, which it now is to everyone but its history.
func removedError(id string) error {
	return fota.Errorf(fota.ENOTFOUND, "unknown device %q", truncate(id, 70))
}

// RemoveDevice removes a device: its sessions end and its key stops
// working at once (on other replicas within their device-key cache's
// life); the row stays as a tombstone with its history. It returns how
// many sessions ended.
func (s *Service) RemoveDevice(ctx context.Context, id string) (int, error) {
	ended, err := s.store.RemoveDevice(ctx, id)
	if err != nil {
		return 0, err
	}
	for _, sess := range ended {
		s.cache.Forget(sess)
	}
	s.cache.ForgetDevice(id)
	s.log.Info("device removed", "device_id", id, "sessions_ended", len(ended))
	return len(ended), nil
}

// WithdrawRelease stops offering a release at once and ends the sessions
// downloading it (their devices get 410 with the reason and keep running
// the image they run); the row stays for history. It returns the release
// as withdrawn and how many sessions ended.
func (s *Service) WithdrawRelease(ctx context.Context, hardware, version, reason string) (*fota.Release, int, error) {
	rel, err := s.store.ReleaseByVersion(ctx, hardware, version)
	if err != nil {
		return nil, 0, err
	}
	ended, err := s.store.WithdrawRelease(ctx, rel.ID, reason)
	if err != nil {
		return nil, 0, err
	}
	for _, sess := range ended {
		s.cache.Flush(ctx, sess.ID)
		s.cache.Forget(sess)
	}
	if rel, err = s.store.Release(ctx, rel.ID); err != nil {
		return nil, 0, err
	}
	s.log.Info("release withdrawn", "release_version", rel.Version, "hardware", rel.Hardware, "sessions_ended", len(ended), "reason", reason)
	return rel, len(ended), nil
}

// sameVersion reports whether a and b are the same version by SemVer
// precedence (build metadata aside: 1.0.4+b7 runs 1.0.4).
func sameVersion(a, b string) bool {
	va, errA := semver.Parse(a)
	vb, errB := semver.Parse(b)
	return errA == nil && errB == nil && semver.Compare(va, vb) == 0
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// newSessionID returns 128 random bits in hex.
func newSessionID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("make session id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
