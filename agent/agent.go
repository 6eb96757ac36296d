// Package agent is the device side of fota: it checks for updates, verifies
// the signed manifest before downloading anything, downloads chunks whose
// HMAC it checks before a byte reaches flash, decrypts as a stream into the
// inactive slot, persists its progress so a power cut resumes instead of
// restarting, checks the firmware's size and SHA-256, marks the slot to boot
// on trial, and after the reboot confirms the image or rolls it back. It is
// a library: the simulated EcoWatt device runs it, and so can any Go
// program on a Linux gateway.
//
// What it defends against: a server or network that sends an unsigned,
// altered, downgraded, lower-counter, wrong-hardware or oversized release
// (refused before download); corrupted, forged or replayed chunks (HMAC,
// re-fetched, then the session is abandoned); a decryption that does not
// produce the signed firmware (refused before the slot is marked); on the
// EcoWatt API, whose signature covers only the firmware digest, a signed
// image relabelled with another version (its ESP32 app descriptor, inside
// the signed bytes, must say a newer version, this device's chip and a
// secure_version not below the stored one, before the slot is marked); an
// image that fails its self-test or never confirms itself (rolled back);
// power cuts at any moment (atomic records, resume, boot-time verification).
//
// On the native API the server may bound when an update is installed (its
// rollout's maintenance windows): the agent then downloads and verifies at
// once, keeps the verified image in the inactive slot, and marks it to boot
// only inside the window (see DeferredError).
package agent

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/delta"
	"github.com/ecowatt/fota/esp32"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
	"github.com/ecowatt/fota/semver"
)

// Version is the agent's own version, told to the server in the inventory
// of every native check-in, so operators see which agent a device runs.
const Version = "0.14.0"

// APIs the agent speaks.
const (
	APINative  = "native"
	APIEcoWatt = "ecowatt"
)

// State is what the agent is doing.
type State string

const (
	StateIdle        State = "idle"
	StateChecking    State = "checking"
	StateDownloading State = "downloading"
	StateVerifying   State = "verifying"
	StateApplying    State = "applying"
	StateCompleted   State = "completed" // the new image is marked; reboot into it
	StateDeferred    State = "deferred"  // verified and kept; installed inside its window
	StateError       State = "error"
	StateRollback    State = "rollback"
)

// Progress is the agent's state as its callback receives it.
type Progress struct {
	State      State
	Version    string // the release being installed
	Chunk      int    // chunks done
	Chunks     int
	Bytes      int64 // ciphertext bytes done
	TotalBytes int64
	Percent    float64
	Err        error
	// Deferred says why and until when, in StateDeferred.
	Deferred *DeferredError
	// Delta: the download is a patch onto the running image (Bytes and
	// TotalBytes are the patch's), and FullBytes the full image's size,
	// which it saves downloading.
	Delta     bool
	FullBytes int64
}

// RetryPolicy is exponential backoff with jitter for transient failures.
type RetryPolicy struct {
	Attempts int           // tries per operation; default 5
	Base     time.Duration // first delay; default 1s
	Max      time.Duration // delay cap; default 1m
}

// DefaultChunksPerRequest is how many chunks a native request asks for
// unless Config says otherwise.
const DefaultChunksPerRequest = 16

// Config configures an Agent.
type Config struct {
	Server   string
	DeviceID string
	PSK      protocol.PSK
	Hardware string
	// Chip is the ESP32 chip the device is ("esp32", "esp32s3", ...); on the
	// EcoWatt API an image's header must name it (default there: Hardware).
	// On the native API it is told in the check-in's inventory, if set.
	Chip           string
	TrustedKey     *keys.PublicKey
	FirmwareKey    keys.FirmwareKey
	API            string        // APINative (default) or APIEcoWatt
	CheckInterval  time.Duration // default 6h
	RequestTimeout time.Duration // per HTTP request; default 30s
	UpdateTimeout  time.Duration // a whole download; default 1h
	Retry          RetryPolicy
	// ChunkRetries is how often a chunk failing its HMAC is fetched again
	// before the session is abandoned; default 3.
	ChunkRetries int
	// NoDelta makes the device take full images only; by default it asks
	// the native API for delta patches onto the image it runs.
	NoDelta bool
	// ChunksPerRequest on the native API; DefaultChunksPerRequest when 0.
	ChunksPerRequest int
	// CheckpointEvery is how many chunks may pass between persisted
	// progress records; default 8. It bounds what a power cut re-downloads.
	CheckpointEvery int
	// HTTPClient carries every request; its Timeout is set from RequestTimeout.
	HTTPClient *http.Client
	OnProgress func(Progress)
	// PauseWork and ResumeWork bracket a download and install, so the device
	// can stop its normal work; ResumeWork is called on every outcome.
	PauseWork, ResumeWork func()
	Logger                *slog.Logger
	// Sleep waits between retries and between checks; tests replace it. It
	// must return ctx's error early when ctx ends: Run's wait is ended so
	// when a push notification comes.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the device clock, which signs native requests and places them
	// in an install window; default time.Now. It need not be right: the
	// agent corrects it by the server's clock when the server refuses a
	// request as stale.
	Now func() time.Time

	// MQTT is the broker the device listens on for push notifications
	// (mqtt://host:1883 or mqtts://host:8883; tcp://, ssl:// and tls://
	// too), or "" for none. Its user name and client id are DeviceID, its
	// password protocol.MQTTPassword(PSK, DeviceID). Push only makes checks
	// sooner: the CheckInterval timer keeps running, and a broker that is
	// down or unreachable costs nothing but a log line.
	MQTT string
	// MQTTRootCAs verifies an mqtts broker; nil: the system's roots.
	MQTTRootCAs *x509.CertPool
	// NotifyMinInterval is how close together two push-triggered checks
	// may begin; default DefaultNotifyMinInterval. Notifications are not
	// authenticated, so this bounds what forged ones can cost.
	NotifyMinInterval time.Duration
}

func (c *Config) defaults() {
	if c.API == "" {
		c.API = APINative
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = 6 * time.Hour
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 30 * time.Second
	}
	if c.UpdateTimeout <= 0 {
		c.UpdateTimeout = time.Hour
	}
	if c.Retry.Attempts <= 0 {
		c.Retry.Attempts = 5
	}
	if c.Retry.Base <= 0 {
		c.Retry.Base = time.Second
	}
	if c.Retry.Max <= 0 {
		c.Retry.Max = time.Minute
	}
	if c.ChunkRetries <= 0 {
		c.ChunkRetries = 3
	}
	if c.ChunksPerRequest <= 0 {
		c.ChunksPerRequest = DefaultChunksPerRequest
	}
	if c.CheckpointEvery <= 0 {
		c.CheckpointEvery = 8
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Sleep == nil {
		c.Sleep = sleep
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.NotifyMinInterval <= 0 {
		c.NotifyMinInterval = DefaultNotifyMinInterval
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Agent updates one device.
type Agent struct {
	cfg   Config
	slots Slots
	boot  BootInfo
	src   source
	log   *slog.Logger
	// now is the device clock as corrected by the server's (native API).
	now func() time.Time

	mu       sync.Mutex
	progress Progress

	broker broker // Config.MQTT parsed
	push   pushState
}

// New returns an agent for a device whose boot step returned boot.
func New(cfg Config, slots Slots, boot BootInfo) (*Agent, error) {
	cfg.defaults()
	if cfg.TrustedKey == nil {
		return nil, errors.New("agent: no trusted public key")
	}
	if !protocol.ValidDeviceID(cfg.DeviceID) {
		return nil, fmt.Errorf("agent: device id %q is not valid", cfg.DeviceID)
	}
	if cfg.Hardware == "" {
		return nil, errors.New("agent: no hardware name")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	hcCopy := *hc
	hcCopy.Timeout = cfg.RequestTimeout
	a := &Agent{cfg: cfg, slots: slots, boot: boot, log: cfg.Logger.With("device_id", cfg.DeviceID),
		progress: Progress{State: StateIdle}, now: cfg.Now}
	if cfg.MQTT != "" {
		b, err := parseBroker(cfg.MQTT)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		a.broker = b
	}
	switch cfg.API {
	case APINative:
		dev, err := client.NewDevice(cfg.Server, cfg.DeviceID, cfg.PSK)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		dev.HTTP = &hcCopy
		dev.Now = cfg.Now
		dev.OnClockCorrected = func(offset time.Duration) {
			a.log.Warn("the device clock is off the server's; signing requests with the server's time",
				"offset", offset.Round(time.Second))
		}
		// Install windows are the server's times: judge them by the clock
		// that signs requests, which the server's Date corrects.
		a.now = func() time.Time { return cfg.Now().Add(dev.ClockOffset()) }
		a.src = &nativeSource{dev: dev, hardware: cfg.Hardware, trusted: cfg.TrustedKey, inventory: a.inventory}
		if !cfg.NoDelta {
			a.src.(*nativeSource).delta = delta.Compressions()
		}
	case APIEcoWatt:
		if cfg.TrustedKey.Alg() != keys.AlgRSA {
			return nil, errors.New("agent: the EcoWatt-compatible API needs an RSA release key")
		}
		if a.cfg.Chip == "" {
			a.cfg.Chip = cfg.Hardware
		}
		if _, ok := esp32.ChipID(a.cfg.Chip); !ok {
			// Nothing signed on this API names the hardware: only the chip in the image can be checked.
			return nil, fmt.Errorf("agent: the EcoWatt-compatible API checks the chip an image is built for, and %q is not an ESP32 chip name: set Config.Chip", a.cfg.Chip)
		}
		if _, err := client.NewDevice(cfg.Server, cfg.DeviceID, cfg.PSK); err != nil { // validates the URL
			return nil, fmt.Errorf("agent: %w", err)
		}
		a.src = &legacySource{base: trimURL(cfg.Server), deviceID: cfg.DeviceID, psk: cfg.PSK, trusted: cfg.TrustedKey, http: &hcCopy}
	default:
		return nil, fmt.Errorf("agent: API %q (want %s or %s)", cfg.API, APINative, APIEcoWatt)
	}
	return a, nil
}

// FreeFlashReporter is an optional interface of Slots: one that knows how
// much flash is free for data tells it in the native check-in's inventory.
type FreeFlashReporter interface {
	FreeFlash() (int64, error)
}

// inventory is what a native check-in tells about the device; fields the
// device does not know are left out.
func (a *Agent) inventory() *protocol.Inventory {
	inv := &protocol.Inventory{Chip: a.cfg.Chip, SlotSize: a.slots.SlotSize(), AgentVersion: Version}
	if r, ok := a.slots.(FreeFlashReporter); ok {
		free, err := r.FreeFlash()
		if err == nil && free > 0 {
			inv.FreeFlash = free
		} else if err != nil && !errors.Is(err, errors.ErrUnsupported) {
			a.log.Debug("free flash unknown", "error", err)
		}
	}
	return inv
}

func trimURL(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// Running returns the image the device runs.
func (a *Agent) Running() Image { return a.boot.Image }

// Progress returns the latest progress.
func (a *Agent) Progress() Progress {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.progress
}

func (a *Agent) setProgress(p Progress) {
	if p.TotalBytes > 0 {
		p.Percent = float64(p.Bytes) * 100 / float64(p.TotalBytes)
	}
	a.mu.Lock()
	a.progress = p
	a.mu.Unlock()
	if a.cfg.OnProgress != nil {
		a.cfg.OnProgress(p)
	}
}

// fatalError is a failure that retrying cannot fix (a bad signature, a
// refused request); anything else is transient.
type fatalError struct{ err error }

func (f *fatalError) Error() string { return f.err.Error() }
func (f *fatalError) Unwrap() error { return f.err }

func fatalf(format string, args ...any) error { return &fatalError{fmt.Errorf(format, args...)} }

// errorClass is what retrying can do about a failure.
type errorClass int

const (
	// classTransient: a fault of the network or the server; retry now, with backoff.
	classTransient errorClass = iota
	// classLater: the server refused for a reason that can change without
	// the device doing anything different (its clock, an operator's policy,
	// the server's view of the session catching up): retrying at once only
	// repeats the refusal, so keep everything and try at the next cycle.
	classLater
	// classFinal: retrying the same request can never succeed.
	classFinal
)

// classify sorts a failure by the error code of the server's answer (see
// docs/PROTOCOL.md, "Errors"), not by its HTTP status alone: a 401 for a
// device clock that is off is fixed by the clock, a 410 for an ended
// session by nothing.
func classify(err error) errorClass {
	var f *fatalError
	if errors.As(err, &f) {
		return classFinal
	}
	var ae *client.APIError
	if !errors.As(err, &ae) {
		return classTransient // the network, a timeout, a garbled answer
	}
	switch ae.Code {
	case "too_many", "unavailable", "internal":
		return classTransient
	case "unauthorized", "forbidden", "conflict":
		return classLater
	case "invalid", "not_found", "session_closed", "too_large":
		return classFinal
	}
	// No fota code: a proxy or load balancer answered, or a server from
	// before codes. Judge by the status.
	switch {
	case ae.Temporary():
		return classTransient
	case ae.Status == http.StatusBadRequest || ae.Status == http.StatusNotFound ||
		ae.Status == http.StatusGone || ae.Status == http.StatusRequestEntityTooLarge:
		return classFinal
	}
	return classLater
}

// IsFatal reports whether err is a failure retrying will never fix.
func IsFatal(err error) bool { return classify(err) == classFinal }

// sessionGone reports whether the server no longer knows the session an
// error answer was about: nothing sent on it can succeed, but what was
// downloaded for its release still can be used by the next session.
func sessionGone(err error) bool {
	var ae *client.APIError
	return errors.As(err, &ae) && (ae.Code == "session_closed" || ae.Code == "not_found" ||
		ae.Code == "" && (ae.Status == http.StatusGone || ae.Status == http.StatusNotFound))
}

// retry runs op until it succeeds, fails fatally, or the attempts run out,
// sleeping with exponential backoff and jitter between tries.
func (a *Agent) retry(ctx context.Context, what string, op func() error) error {
	var err error
	for attempt := 0; attempt < a.cfg.Retry.Attempts; attempt++ {
		if err = op(); err == nil || classify(err) != classTransient || ctx.Err() != nil {
			return err
		}
		if errors.Is(err, ErrChunkMAC) {
			return err // counted per chunk by the caller
		}
		if attempt == a.cfg.Retry.Attempts-1 {
			break
		}
		delay := min(a.cfg.Retry.Base<<attempt, a.cfg.Retry.Max)
		delay = delay/2 + rand.N(delay/2+1)
		// A server that says when to come back is obeyed: sooner only adds
		// to its load. Longer than a retry may wait, the next timed check
		// tries again.
		var ae *client.APIError
		if errors.As(err, &ae) && ae.RetryAfter > 0 {
			if ae.RetryAfter > a.cfg.Retry.Max {
				return fmt.Errorf("%s: the server asks to come back in %s: %w", what, ae.RetryAfter, err)
			}
			delay = max(delay, ae.RetryAfter)
		}
		a.log.Warn("transient failure, retrying", "operation", what, "attempt", attempt+1, "delay", delay, "error", err)
		if serr := a.cfg.Sleep(ctx, delay); serr != nil {
			return err
		}
	}
	return fmt.Errorf("%s: gave up after %d attempts: %w", what, a.cfg.Retry.Attempts, err)
}

// NVS keys of the agent's persisted records. Each record is versioned JSON.
const (
	keyDownload = "download"
	keyInstall  = "install"
	keyOutbox   = "outbox"
)

const recordVersion = 1

// downloadRecord is the resume point of a download in progress.
type downloadRecord struct {
	V           int                   `json:"v"`
	Fingerprint string                `json:"fingerprint"`
	SessionID   string                `json:"session_id,omitempty"`
	Slot        int                   `json:"slot"`
	NextChunk   int                   `json:"next_chunk"`
	Bytes       int64                 `json:"bytes"`
	Decrypter   bundle.DecrypterState `json:"decrypter"`
	PlainHash   []byte                `json:"plain_hash"`
	CipherHash  []byte                `json:"cipher_hash"`
	// Head is the image's first bytes written so far (at most
	// esp32.HeaderSize), kept on the EcoWatt API for the descriptor check.
	Head []byte `json:"head,omitempty"`
	// Patcher is the delta patcher's checkpoint and Written the image bytes
	// it had written, for a delta download (the decrypter's Written is
	// then the patch's bytes).
	Patcher []byte `json:"patcher,omitempty"`
	Written int64  `json:"written,omitempty"`
	// Verified: the whole image is in the slot and matched its signed
	// SHA-256, and waits for its install window; the stream state above is
	// then empty. Added to version 1: a reader that ignores it finds no
	// stream state to resume and downloads again, which costs no more.
	Verified bool `json:"verified,omitempty"`
}

// installRecord says which session installed the image on trial, for its report.
type installRecord struct {
	V         int    `json:"v"`
	API       string `json:"api"`
	SessionID string `json:"session_id,omitempty"`
	Version   string `json:"version"`
}

func (a *Agent) load(key string, v any) bool {
	data, err := a.slots.LoadNVS(key)
	if err != nil {
		if !errors.Is(err, ErrNoValue) {
			a.log.Warn("cannot read saved state", "key", key, "error", err)
		}
		return false
	}
	if json.Unmarshal(data, v) != nil {
		a.log.Warn("saved state unreadable; ignoring it", "key", key)
		return false
	}
	return true
}

func (a *Agent) save(key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := a.slots.SaveNVS(key, data); err != nil {
		return fmt.Errorf("save %s: %w", key, err)
	}
	return nil
}

// queue adds a report to the persisted outbox, once.
func (a *Agent) queue(r report) error {
	var box []report
	a.load(keyOutbox, &box)
	for _, q := range box {
		if q == r {
			return nil
		}
	}
	box = append(box, r)
	if len(box) > 32 { // a device offline for long keeps the latest
		box = box[len(box)-32:]
	}
	return a.save(keyOutbox, box)
}

// Flush sends queued reports, oldest first, until the server has each one
// or has refused it for a reason retrying cannot fix (the session ended or
// is unknown, the report is malformed): those are dropped, with a log
// line. A transient failure (the network, 429, 5xx) is retried with
// backoff; if that does not get it through, it and every later report stay
// queued, in order, for the next Flush: the next check on the timer, the
// next boot. A refusal that may change by itself (401, 403, 409) keeps the
// report queued and moves on to the next. The outbox is in NVS, so it
// survives reboots. Flush returns the first failure that kept a report.
func (a *Agent) Flush(ctx context.Context) error {
	var box []report
	if !a.load(keyOutbox, &box) || len(box) == 0 {
		return nil
	}
	var firstErr error
	kept := make([]report, 0, len(box))
	for i, r := range box {
		if r.Status == "confirmed" && r.Version != a.boot.Image.Version {
			// Queued before a confirm that never completed (power went, and
			// the image ran out of trial boots): it is not the truth anymore.
			a.log.Warn("dropping the report of a confirm that did not complete", "release_version", r.Version)
			continue
		}
		if r.Status == "confirmed" && a.boot.Trial {
			kept = append(kept, r) // the image has not confirmed itself yet on this boot
			continue
		}
		err := a.retry(ctx, "report "+r.Status, func() error { return a.src.send(ctx, r) })
		if err == nil {
			a.log.Info("reported", "status", r.Status, "release_version", r.Version, "session_id", r.SessionID)
			continue
		}
		if firstErr == nil && classify(err) != classFinal {
			firstErr = err
		}
		switch classify(err) {
		case classFinal:
			a.log.Warn("report refused for good; dropping it", "status", r.Status, "release_version", r.Version,
				"session_id", r.SessionID, "error", err)
		case classLater:
			a.log.Warn("report refused for now; keeping it for the next try", "status", r.Status, "release_version", r.Version,
				"session_id", r.SessionID, "error", err)
			kept = append(kept, r)
		default:
			// The server is unreachable or overloaded: the rest would only
			// fail the same way, and sending them out of order helps nobody.
			a.log.Info("reports stay queued", "status", r.Status, "release_version", r.Version, "queued", len(box)-i, "error", err)
			kept = append(kept, box[i:]...)
			return a.saveOutbox(kept, firstErr)
		}
	}
	return a.saveOutbox(kept, firstErr)
}

// saveOutbox stores what Flush kept and returns err, or the failure to store it.
func (a *Agent) saveOutbox(kept []report, err error) error {
	if len(kept) == 0 {
		if derr := a.slots.DeleteNVS(keyOutbox); derr != nil {
			return fmt.Errorf("empty the report outbox: %w", derr)
		}
		return err
	}
	if serr := a.save(keyOutbox, kept); serr != nil {
		return fmt.Errorf("keep %d queued reports: %w", len(kept), serr)
	}
	return err
}

// Startup runs once after the boot step: it queues the report of a
// rollback the boot performed, drops a download the boot made impossible,
// and sends what is queued (best effort: the device works offline too).
func (a *Agent) Startup(ctx context.Context) error {
	var inst installRecord
	haveInstall := a.load(keyInstall, &inst)
	if rb := a.boot.Rollback; rb != nil {
		a.setProgress(Progress{State: StateRollback, Version: rb.Version, Err: errors.New(rb.Reason)})
		r := report{API: a.cfg.API, Version: rb.Version, Status: "rolled-back", Reason: rb.Reason}
		if haveInstall && inst.Version == rb.Version {
			r.API, r.SessionID = inst.API, inst.SessionID
		}
		if err := a.queue(r); err != nil {
			return err
		}
		if err := a.slots.AckRollback(); err != nil {
			return err
		}
		if haveInstall && inst.Version == rb.Version {
			a.slots.DeleteNVS(keyInstall)
		}
		a.log.Warn("rolled back", "release_version", rb.Version, "reason", rb.Reason, "running", a.boot.Image.Version)
	}
	var dl downloadRecord
	if a.load(keyDownload, &dl) && dl.Slot == a.boot.Slot {
		a.slots.DeleteNVS(keyDownload) // its slot now runs: nothing to resume
	}
	if a.boot.Trial {
		a.setProgress(Progress{State: StateApplying, Version: a.boot.Image.Version})
	} else {
		a.setProgress(Progress{State: StateIdle})
	}
	if err := a.Flush(ctx); err != nil {
		a.log.Info("reports stay queued", "error", err)
	}
	return nil
}

// Confirm is called by the running image once its self-test passed: the
// image becomes valid, the stored security counter rises, and the server
// hears of it.
func (a *Agent) Confirm(ctx context.Context) error {
	if !a.boot.Trial {
		return ErrNotOnTrial
	}
	var inst installRecord
	if a.load(keyInstall, &inst) && inst.Version == a.boot.Image.Version {
		// Queued before confirming: a cut in between repeats the report, never loses it.
		if err := a.queue(report{API: inst.API, SessionID: inst.SessionID, Version: inst.Version, Status: "confirmed"}); err != nil {
			return err
		}
	}
	if err := a.slots.Confirm(); err != nil {
		return fmt.Errorf("confirm image: %w", err)
	}
	a.boot.Trial = false
	a.slots.DeleteNVS(keyInstall)
	a.log.Info("update confirmed", "release_version", a.boot.Image.Version)
	a.setProgress(Progress{State: StateIdle, Version: a.boot.Image.Version})
	if err := a.Flush(ctx); err != nil {
		a.log.Info("reports stay queued", "error", err)
	}
	return nil
}

// Reject is called by the running image when its self-test failed: the
// next boot runs the previous image, which reports the rollback.
func (a *Agent) Reject(reason string) error {
	if !a.boot.Trial {
		return ErrNotOnTrial
	}
	if err := a.slots.Reject(reason); err != nil {
		return fmt.Errorf("reject image: %w", err)
	}
	a.log.Warn("self-test failed; rolling back at the next boot", "release_version", a.boot.Image.Version, "reason", reason)
	a.setProgress(Progress{State: StateRollback, Version: a.boot.Image.Version, Err: errors.New(reason)})
	return nil
}

// ErrInstallDeferred is what errors.Is finds in a *DeferredError.
var ErrInstallDeferred = errors.New("install deferred to the maintenance window")

// DeferredError is a check whose update downloaded and verified but was
// not installed: the device's clock was outside the install window the
// server gave ([InstallAfter, InstallUntil) of protocol.CheckResponse).
// It is not a failure and the server was told nothing that ends the
// session. The verified image stays in the inactive slot, recorded, so
// neither the next check nor a reboot downloads it again; the next check
// in the window installs it.
type DeferredError struct {
	Version   string
	SessionID string
	// Until is when the window opens (the answer's InstallAfter), so when
	// to check again. Zero when the window has closed instead (at Closed):
	// then the next check's answer names the next window.
	Until  time.Time
	Closed time.Time
}

func (e *DeferredError) Error() string {
	return fmt.Sprintf("update %s downloaded and verified; %s", e.Version, e.why())
}

func (e *DeferredError) why() string {
	if !e.Until.IsZero() {
		return "install deferred until " + e.Until.UTC().Format(time.RFC3339) + " (maintenance window)"
	}
	return "install deferred: the maintenance window closed at " + e.Closed.UTC().Format(time.RFC3339) +
		"; the next check learns the next one"
}

// Is makes errors.Is(err, ErrInstallDeferred) true.
func (e *DeferredError) Is(target error) bool { return target == ErrInstallDeferred }

// deferral is the DeferredError for installing o now, or nil inside its
// window (or when the server gave none).
func (a *Agent) deferral(o *offer) *DeferredError {
	now := a.now()
	switch {
	case !o.installAfter.IsZero() && now.Before(o.installAfter):
		return &DeferredError{Version: o.version, SessionID: o.sessionID, Until: o.installAfter}
	case !o.installUntil.IsZero() && !now.Before(o.installUntil):
		return &DeferredError{Version: o.version, SessionID: o.sessionID, Closed: o.installUntil}
	}
	return nil
}

// Result is what one check did.
type Result struct {
	Updated   bool   // a new image is marked to boot: reboot now
	Version   string // its version
	SessionID string // the server's update session (native API)
	Message   string // the server's word when there was no update
}

// CheckOnce checks for an update and, if one is offered and verifies,
// downloads and installs it. On success with Updated the device must
// reboot. The device's running image is never touched. An update verified
// outside its install window is kept, not installed: the error is then a
// *DeferredError, and the Result names the version and session.
func (a *Agent) CheckOnce(ctx context.Context) (Result, error) {
	res, err := a.checkOnce(ctx)
	if isDeltaFailure(err) && ctx.Err() == nil {
		// Reported failed: the server offers this device the full image
		// from now on. Take it now rather than at the next check.
		a.log.Warn("the delta patch failed; checking again for the full image", "error", err)
		return a.checkOnce(ctx)
	}
	return res, err
}

func (a *Agent) checkOnce(ctx context.Context) (Result, error) {
	if a.boot.Trial {
		return Result{}, errors.New("the running image is on trial: confirm or reject it before updating")
	}
	// Every check first sends what is queued, so a report the server could
	// not take before is retried on the timer's next cycle.
	if err := a.Flush(ctx); err != nil {
		a.log.Info("reports stay queued", "error", err)
	}
	a.setProgress(Progress{State: StateChecking})
	st, err := a.slots.Status()
	if err != nil {
		return Result{}, err
	}
	counter, err := a.securityCounter()
	if err != nil {
		a.fail(ctx, nil, err)
		return Result{}, err
	}
	var o *offer
	var msg string
	err = a.retry(ctx, "check", func() error {
		var err error
		o, msg, err = a.src.check(ctx, a.boot.Image, counter)
		return err
	})
	if err == nil && o != nil {
		if verr := a.vet(o, st, counter); verr != nil {
			err = &refusal{verr}
		}
	}
	if err != nil {
		a.fail(ctx, o, err)
		return Result{}, err
	}
	if o == nil {
		a.setProgress(Progress{State: StateIdle})
		return Result{Message: msg}, nil
	}
	if a.cfg.PauseWork != nil {
		a.cfg.PauseWork()
	}
	if a.cfg.ResumeWork != nil {
		defer a.cfg.ResumeWork()
	}
	uctx, cancel := context.WithTimeout(ctx, a.cfg.UpdateTimeout)
	defer cancel()
	if err := a.install(uctx, o); err != nil {
		var de *DeferredError
		if errors.As(err, &de) {
			a.log.Info("download complete; "+de.why(), "release_version", o.version, "session_id", o.sessionID)
			a.setProgress(Progress{State: StateDeferred, Version: o.version, Chunk: o.chunks, Chunks: o.chunks,
				Bytes: o.ciphertextSize, TotalBytes: o.ciphertextSize, Deferred: de})
			// The downloaded and verified reports, not held back by the window.
			if err := a.Flush(ctx); err != nil {
				a.log.Info("reports stay queued", "error", err)
			}
			return Result{Version: o.version, SessionID: o.sessionID}, de
		}
		if uctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
			err = fmt.Errorf("update %s did not finish within %s: %w", o.version, a.cfg.UpdateTimeout, err)
		}
		a.fail(ctx, o, err)
		return Result{}, err
	}
	a.setProgress(Progress{State: StateCompleted, Version: o.version, Chunk: o.chunks, Chunks: o.chunks,
		Bytes: o.ciphertextSize, TotalBytes: o.ciphertextSize})
	if err := a.Flush(ctx); err != nil {
		a.log.Info("reports stay queued", "error", err)
	}
	return Result{Updated: true, Version: o.version, SessionID: o.sessionID}, nil
}

// securityCounter reads the stored counter; without it no offer can be
// judged, so an unreadable one refuses every update.
func (a *Agent) securityCounter() (uint32, error) {
	c, err := a.slots.SecurityCounter()
	if err != nil {
		return 0, fatalf("refusing updates until the device is serviced: %w", err)
	}
	return c, nil
}

// vet applies the device's own rules to a verified offer. On the EcoWatt
// API the version is the check answer's unsigned word and there is no
// counter: vetDescriptor checks what the image says after the download.
func (a *Agent) vet(o *offer, st Status, counter uint32) error {
	if err := a.vetVersion(o.version, st); err != nil {
		return err
	}
	switch {
	case o.api == APINative && o.securityCounter < counter:
		return fatalf("refusing update %s: security counter %d is below the device's %d", o.version, o.securityCounter, counter)
	case o.plaintextSize > a.slots.SlotSize():
		return fatalf("refusing update %s: %d bytes do not fit the %d-byte slot", o.version, o.plaintextSize, a.slots.SlotSize())
	}
	return nil
}

// vetVersion refuses a version that is not newer than the running one, or
// that this device rolled back from.
func (a *Agent) vetVersion(version string, st Status) error {
	running, err := semver.Parse(a.boot.Image.Version)
	if err != nil {
		return fatalf("running version %q is not a semantic version", a.boot.Image.Version)
	}
	v, err := semver.Parse(version)
	if err != nil {
		return fatalf("refusing update: version %q is not a semantic version", version)
	}
	if semver.Compare(v, running) <= 0 {
		return fatalf("refusing update %s: not newer than the running %s (downgrade)", version, a.boot.Image.Version)
	}
	for _, r := range st.Rejected {
		if r == version {
			return fatalf("refusing update %s: this device rolled back from it; waiting for a newer release", version)
		}
	}
	return nil
}

// vetDescriptor checks, on the EcoWatt API, the ESP32 app descriptor of an
// image whose SHA-256 already matched the signed one. That API signs only
// the digest, so the descriptor is the one trustworthy word on the image's
// version, chip and secure_version; the check answer's version is not.
func (a *Agent) vetDescriptor(o *offer, head []byte, st Status, counter uint32) error {
	info, err := esp32.Parse(head)
	if err != nil {
		return fatalf("refusing update %s: the image has no ESP32 app descriptor, the only signed word on its version and chip on the EcoWatt API: %w", o.version, err)
	}
	if err := a.vetVersion(info.Version, st); err != nil {
		return fmt.Errorf("signed image offered as %s: %w", o.version, err)
	}
	switch {
	case info.Chip != a.cfg.Chip:
		return fatalf("refusing update %s: the image is built for %s, this device is %s", info.Version, info.Chip, a.cfg.Chip)
	case info.SecureVersion < counter:
		return fatalf("refusing update %s: the image's secure_version %d is below the device's %d", info.Version, info.SecureVersion, counter)
	case info.Version != o.version:
		// The server would keep offering a version the device never reports running.
		return fatalf("refusing update: offered as %s, but the signed image's app descriptor says %s", o.version, info.Version)
	}
	o.securityCounter = info.SecureVersion
	return nil
}

// fail records a failed attempt. The download record is the resume point
// of chunks already checked against their HMACs: it is dropped only when
// the device itself found the offer or the image bad (a refused manifest,
// a chunk that kept failing its HMAC, an image that did not verify), never
// because the server or the network refused or failed a request. Those
// leave it for the next check, which resumes from it, in a new session if
// this one ended (the record names the release, not the session). Final
// failures are reported to the server, ending the session, unless it has
// ended already; anything else is only logged and retried at the next check.
func (a *Agent) fail(ctx context.Context, o *offer, err error) {
	a.log.Error("update failed", "error", err)
	p := Progress{State: StateError, Err: err}
	if o != nil {
		p.Version = o.version
	}
	a.setProgress(p)
	if o == nil {
		return
	}
	var ae *client.APIError
	refused := errors.As(err, &ae)
	badImage := errors.Is(err, ErrChunkMAC) || errors.Is(err, errVerify)
	if badImage || IsFatal(err) && !refused {
		if derr := a.slots.DeleteNVS(keyDownload); derr != nil {
			a.log.Warn("cannot forget the download", "error", derr)
		}
	}
	if !(IsFatal(err) || badImage) || sessionGone(err) {
		return
	}
	// A refusal of the offer itself is said as such on the native API, so
	// the server stops offering the release to this device; the EcoWatt API
	// knows only failures (which back the release off there).
	status := "failed"
	var r *refusal
	if errors.As(err, &r) && o.api == APINative {
		status = "refused"
	}
	rep := report{API: o.api, SessionID: o.sessionID, Version: o.version, Status: status, Reason: truncate(err.Error(), 400)}
	if isDeltaFailure(err) {
		rep.Artifact = "delta"
	}
	if qerr := a.queue(rep); qerr != nil {
		a.log.Warn("cannot queue the failure report", "error", qerr)
		return
	}
	if ferr := a.Flush(ctx); ferr != nil {
		a.log.Info("reports stay queued", "error", ferr)
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// refusal is the device declining an offer before downloading it: not
// newer, rolled back from, below its security counter, too big for its
// slot. Retrying cannot change it.
type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

// IsRefusal reports whether err is the device declining an offer (it is
// not newer, rolled back from, below the security counter, too big): the
// device is fine and says so to the server, which stops offering it.
func IsRefusal(err error) bool {
	var r *refusal
	return errors.As(err, &r)
}

// errVerify marks a downloaded image that did not check out.
var errVerify = errors.New("downloaded image failed verification")

// slotWriter writes plaintext into the slot and hashes it. With head set
// (non-nil) it also keeps the image's first esp32.HeaderSize bytes: the
// bytes hashed, so once the digest matches they are the signed ones,
// whatever Slots does with them.
type slotWriter struct {
	slots Slots
	slot  int
	off   int64
	hash  hash.Hash
	head  []byte
	// erase: the slot is erased before the first write, which comes only
	// from a chunk that passed its HMAC: a check answer altered on the way
	// costs no erase, however often it comes.
	erase bool
}

func (w *slotWriter) Write(p []byte) (int, error) {
	if w.erase {
		if err := w.slots.Erase(w.slot); err != nil {
			return 0, fmt.Errorf("erase slot %d: %w", w.slot, err)
		}
		w.erase = false
	}
	if err := w.slots.WriteAt(w.slot, p, w.off); err != nil {
		return 0, err
	}
	if w.head != nil && len(w.head) < esp32.HeaderSize {
		w.head = append(w.head, p[:min(len(p), esp32.HeaderSize-len(w.head))]...)
	}
	w.off += int64(len(p))
	w.hash.Write(p)
	return len(p), nil
}

func marshalHash(h hash.Hash) []byte {
	b, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
	return b
}

func unmarshalHash(b []byte) (hash.Hash, bool) {
	h := sha256.New()
	return h, h.(encoding.BinaryUnmarshaler).UnmarshalBinary(b) == nil
}

// install downloads, verifies and marks the image, resuming a saved
// download, or going straight to marking one verified before.
func (a *Agent) install(ctx context.Context, o *offer) error {
	slot := Other(a.boot.Slot)
	st, err := a.slots.Status()
	if err != nil {
		return err
	}
	var dl downloadRecord
	saved := a.load(keyDownload, &dl) && dl.V == recordVersion && dl.Fingerprint == o.fingerprint() &&
		dl.Slot == slot && st.Slots[slot].State == ImageEmpty
	if saved && dl.Verified && dl.NextChunk == o.chunks {
		return a.installVerified(o, slot, st, dl)
	}
	resumed := saved && !dl.Verified && dl.NextChunk > 0 && dl.NextChunk <= o.chunks
	w := &slotWriter{slots: a.slots, slot: slot}
	var ctHash hash.Hash
	var dec *bundle.Decrypter
	var patcher *delta.Patcher
	if resumed {
		var ok1, ok2 bool
		w.hash, ok1 = unmarshalHash(dl.PlainHash)
		ctHash, ok2 = unmarshalHash(dl.CipherHash)
		w.off = dl.Decrypter.Written
		var sink io.Writer = w
		if o.delta != nil {
			// A damaged or missing patcher checkpoint starts the download again.
			w.off = dl.Written
			var perr error
			if patcher, perr = a.newPatcher(o, w, dl.Patcher); perr != nil || dl.Patcher == nil || patcher.Written() != dl.Written {
				ok1 = false
			} else {
				sink = patchSink{patcher}
			}
		}
		dec, err = bundle.ResumeDecrypter(sink, a.cfg.FirmwareKey, dl.Decrypter)
		resumed = ok1 && ok2 && err == nil
		if o.api == APIEcoWatt {
			// A record without the head (or a damaged one) cannot be checked: start again.
			w.head = append(make([]byte, 0, esp32.HeaderSize), dl.Head...)
			resumed = resumed && int64(len(w.head)) == min(w.off, esp32.HeaderSize)
		}
	}
	if resumed {
		a.log.Info("resuming download", "release_version", o.version, "chunk_index", dl.NextChunk, "chunks", o.chunks)
	} else {
		w.erase = true
		dl = downloadRecord{V: recordVersion, Fingerprint: o.fingerprint(), Slot: slot}
		w.off, w.hash, ctHash = 0, sha256.New(), sha256.New()
		if o.api == APIEcoWatt {
			w.head = make([]byte, 0, esp32.HeaderSize)
		}
		var sink io.Writer = w
		if o.delta != nil {
			if patcher, err = a.newPatcher(o, w, nil); err != nil {
				return deltaFailed("%v", err)
			}
			sink = patchSink{patcher}
		}
		if dec, err = bundle.NewDecrypter(sink, a.cfg.FirmwareKey, o.iv); err != nil {
			return fatalf("%v", err)
		}
		if o.delta != nil {
			a.log.Info("downloading a delta patch", "release_version", o.version, "from_version", o.delta.baseVersion,
				"compression", o.delta.compression, "patch_bytes", o.delta.patchSize, "image_bytes", o.plaintextSize, "chunks", o.chunks, "slot", slot)
		} else {
			a.log.Info("downloading", "release_version", o.version, "chunks", o.chunks, "slot", slot)
		}
	}
	dl.SessionID = o.sessionID

	checkpoint := func() error {
		if err := a.slots.Sync(slot); err != nil {
			return err
		}
		dl.Decrypter = dec.Checkpoint()
		dl.PlainHash, dl.CipherHash = marshalHash(w.hash), marshalHash(ctHash)
		dl.Head = w.head
		if patcher != nil {
			state, err := patcher.Checkpoint()
			if err != nil {
				return err
			}
			dl.Patcher, dl.Written = state, w.off
		}
		return a.save(keyDownload, dl)
	}
	progress := func() {
		a.setProgress(Progress{State: StateDownloading, Version: o.version, Chunk: dl.NextChunk, Chunks: o.chunks,
			Bytes: dl.Bytes, TotalBytes: o.ciphertextSize, Delta: o.delta != nil, FullBytes: o.fullSize})
	}
	progress()
	macFailures := map[int]int{}
	for dl.NextChunk < o.chunks {
		count := min(a.cfg.ChunksPerRequest, o.chunks-dl.NextChunk)
		err := a.retry(ctx, "download", func() error {
			start := dl.NextChunk
			err := a.src.fetch(ctx, o, dl.NextChunk, count, func(index int, data []byte) error {
				if index != dl.NextChunk {
					return fmt.Errorf("chunk %d arrived, expected %d", index, dl.NextChunk)
				}
				if dl.Bytes+int64(len(data)) > o.ciphertextSize {
					return fatalf("server sent more than the %d bytes the release has", o.ciphertextSize)
				}
				ctHash.Write(data)
				if _, err := dec.Write(data); err != nil {
					if isDeltaFailure(err) {
						return err
					}
					return fatalf("write slot: %v", err)
				}
				dl.NextChunk++
				dl.Bytes += int64(len(data))
				if dl.NextChunk%a.cfg.CheckpointEvery == 0 {
					if err := checkpoint(); err != nil {
						return fatalf("save progress: %v", err)
					}
				}
				progress()
				return nil
			})
			if err != nil && dl.NextChunk > start && !IsFatal(err) && !errors.Is(err, ErrChunkMAC) {
				// Chunks arrived before the failure: go on from there with fresh retries.
				a.log.Info("download interrupted; continuing", "chunk_index", dl.NextChunk, "error", err)
				return nil
			}
			return err
		})
		if errors.Is(err, ErrChunkMAC) {
			macFailures[dl.NextChunk]++
			if macFailures[dl.NextChunk] > a.cfg.ChunkRetries {
				return fmt.Errorf("chunk %d failed its HMAC %d times; abandoning the session: %w", dl.NextChunk, macFailures[dl.NextChunk], err)
			}
			a.log.Warn("chunk failed its HMAC; fetching it again", "chunk_index", dl.NextChunk, "error", err)
			continue
		}
		var ae *client.APIError
		if errors.As(err, &ae) && ae.Code == "invalid" && dl.NextChunk < o.chunks {
			// The server's session ends before the signed manifest's
			// ciphertext does: it serves another artifact than the answer
			// said (altered on the way). What was written is not this
			// image's: drop it, and let the server offer afresh.
			return deltaFailed("download %s: the server refused chunk %d of the %d the signed manifest has (%v): the session serves another artifact",
				o.version, dl.NextChunk, o.chunks, err)
		}
		if err != nil {
			// Keep what is on flash: the next check resumes from the last checkpoint.
			return fmt.Errorf("download %s at chunk %d of %d: %w", o.version, dl.NextChunk, o.chunks, err)
		}
	}

	a.setProgress(Progress{State: StateVerifying, Version: o.version, Chunk: o.chunks, Chunks: o.chunks, Bytes: dl.Bytes, TotalBytes: o.ciphertextSize})
	if err := dec.Close(); err != nil {
		switch {
		case isDeltaFailure(err):
			return err
		case o.delta != nil:
			// Of a patch, a delta failure like any other: not the release's.
			return deltaFailed("%v", err)
		}
		return fmt.Errorf("%w: %v", errVerify, err)
	}
	if o.ciphertextSHA != nil && [32]byte(ctHash.Sum(nil)) != *o.ciphertextSHA {
		if o.delta != nil {
			return deltaFailed("the patch's ciphertext sha256 is not the signed one")
		}
		return fmt.Errorf("%w: ciphertext sha256 mismatch", errVerify)
	}
	if patcher != nil {
		if err := a.finishPatch(o, dec, patcher, w); err != nil {
			return err
		}
	}
	if w.off != o.plaintextSize {
		return fmt.Errorf("%w: %d bytes decrypted, the release has %d", errVerify, w.off, o.plaintextSize)
	}
	if [32]byte(w.hash.Sum(nil)) != o.plaintextSHA256 {
		return fmt.Errorf("%w: firmware sha256 mismatch", errVerify)
	}
	if o.api == APIEcoWatt {
		// Before any "verified" report and before the slot is marked.
		counter, err := a.securityCounter()
		if err != nil {
			return err
		}
		if err := a.vetDescriptor(o, w.head, st, counter); err != nil {
			return err
		}
	}
	if err := a.slots.Sync(slot); err != nil {
		return err
	}
	if err := a.queueVerified(o); err != nil {
		return err
	}
	return a.apply(o, slot, dl)
}

// queueVerified queues the reports of a download that verified.
func (a *Agent) queueVerified(o *offer) error {
	for _, status := range []string{"downloaded", "verified"} {
		// Not fatal: the download record stays, so the next check verifies again and queues these.
		if err := a.queue(report{API: o.api, SessionID: o.sessionID, Version: o.version, Status: status}); err != nil {
			return fmt.Errorf("queue the %s report: %w", status, err)
		}
	}
	return nil
}

// installVerified installs an image a check before downloaded and
// verified, and kept for its install window (dl.Verified). It waited in
// the slot, maybe for days and over reboots, so it is hashed again: a
// slot that no longer holds the signed image is never marked to boot.
func (a *Agent) installVerified(o *offer, slot int, st Status, dl downloadRecord) error {
	a.setProgress(Progress{State: StateVerifying, Version: o.version, Chunk: o.chunks, Chunks: o.chunks, Bytes: dl.Bytes, TotalBytes: o.ciphertextSize})
	head, err := a.verifySlot(o, slot)
	if err != nil {
		return err
	}
	if o.api == APIEcoWatt {
		counter, err := a.securityCounter()
		if err != nil {
			return err
		}
		if err := a.vetDescriptor(o, head, st, counter); err != nil {
			return err
		}
	}
	a.log.Info("image downloaded and verified before; not downloading it again", "release_version", o.version, "slot", slot)
	if dl.SessionID != o.sessionID {
		// A new session for the same release (the old one ended while the
		// image waited): its record hears of the download too.
		if err := a.queueVerified(o); err != nil {
			return err
		}
	}
	return a.apply(o, slot, dl)
}

// verifySlot hashes the first o.plaintextSize bytes of slot against the
// signed SHA-256 and returns the image's first esp32.HeaderSize bytes.
func (a *Agent) verifySlot(o *offer, slot int) ([]byte, error) {
	h := sha256.New()
	buf := make([]byte, 32<<10)
	var head []byte
	for off := int64(0); off < o.plaintextSize; {
		n := int(min(int64(len(buf)), o.plaintextSize-off))
		got, err := a.slots.ReadAt(slot, buf[:n], off)
		if got < n {
			if err == nil || errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%w: slot %d holds %d bytes of the %d-byte image", errVerify, slot, off+int64(got), o.plaintextSize)
			}
			return nil, fmt.Errorf("read slot %d: %w", slot, err)
		}
		if len(head) < esp32.HeaderSize {
			head = append(head, buf[:min(n, esp32.HeaderSize-len(head))]...)
		}
		h.Write(buf[:n])
		off += int64(n)
	}
	if [32]byte(h.Sum(nil)) != o.plaintextSHA256 {
		return nil, fmt.Errorf("%w: the image kept in slot %d no longer matches its sha256", errVerify, slot)
	}
	return head, nil
}

// apply marks the verified image in slot to boot next, if the device's
// clock is inside the offer's install window. Outside it, it keeps the
// download (dl) as verified and returns a *DeferredError.
func (a *Agent) apply(o *offer, slot int, dl downloadRecord) error {
	if de := a.deferral(o); de != nil {
		if !dl.Verified || dl.SessionID != o.sessionID {
			// The slot was synced before the reports; this record is what
			// makes a reboot while waiting resume here, not re-download.
			dl.Verified, dl.NextChunk, dl.SessionID = true, o.chunks, o.sessionID
			dl.Decrypter, dl.PlainHash, dl.CipherHash = bundle.DecrypterState{}, nil, nil
			if err := a.save(keyDownload, dl); err != nil {
				return fmt.Errorf("keep the verified download: %w", err)
			}
		}
		return de
	}

	a.setProgress(Progress{State: StateApplying, Version: o.version, Chunk: o.chunks, Chunks: o.chunks, Bytes: dl.Bytes, TotalBytes: o.ciphertextSize})
	// The install record comes first, so the new image can name its session
	// when it reports; then the slot is marked; then the download forgotten.
	if err := a.save(keyInstall, installRecord{V: recordVersion, API: o.api, SessionID: o.sessionID, Version: o.version}); err != nil {
		return err
	}
	img := Image{Version: o.version, SecurityCounter: o.securityCounter, Size: o.plaintextSize, SHA256: o.plaintextSHA256}
	if err := a.slots.SetPending(slot, img); err != nil {
		return fmt.Errorf("mark slot %d: %w", slot, err)
	}
	if err := a.slots.DeleteNVS(keyDownload); err != nil {
		// Harmless: Startup drops a record for the slot that runs.
		a.log.Warn("cannot forget the finished download", "error", err)
	}
	if err := a.queue(report{API: o.api, SessionID: o.sessionID, Version: o.version, Status: "applied"}); err != nil {
		// The slot is marked: failing the install now would only hide that
		// a reboot runs the new image; its confirm is the report that matters.
		a.log.Warn("cannot queue the applied report", "error", err)
	}
	a.log.Info("update installed; reboot to run it", "release_version", o.version, "slot", slot)
	return nil
}

// Run checks for updates every CheckInterval (and once at start) until ctx
// ends. After an install it calls reboot, which should restart the device;
// Run returns then. An install deferred to a window that opens sooner than
// the next check is checked again when the window opens. A notification
// (Notify, or the MQTT subscriber Run starts when Config.MQTT is set)
// brings a check forward; the timed check is then CheckInterval after it,
// since any check learns all there is to learn.
func (a *Agent) Run(ctx context.Context, reboot func()) error {
	if a.cfg.MQTT != "" {
		stop := a.startPush(ctx)
		defer stop()
	}
	pushed := false
	for {
		a.beginCheck(pushed)
		res, err := a.CheckOnce(ctx)
		if err == nil && res.Updated {
			reboot()
			return nil
		}
		if pushed, err = a.wait(ctx, a.nextCheck(err)); err != nil {
			return nil
		}
	}
}

// nextCheck is how long Run waits after a check that ended with err.
func (a *Agent) nextCheck(err error) time.Duration {
	var de *DeferredError
	if !errors.As(err, &de) || de.Until.IsZero() {
		return a.cfg.CheckInterval
	}
	wait := max(de.Until.Sub(a.now()), 0)
	if wait >= a.cfg.CheckInterval {
		return a.cfg.CheckInterval
	}
	// Up to a minute late (an eighth of the wait when shorter), so that a
	// fleet given one window does not check in at its first second.
	return wait + rand.N(min(wait/8, time.Minute)+1)
}
