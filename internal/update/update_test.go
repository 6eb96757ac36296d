package update_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/sqlite"
	"github.com/ecowatt/fota/internal/storetest"
	"github.com/ecowatt/fota/internal/update"
)

// harness is the update service on a real SQLite store with a clock the
// test moves.
type harness struct {
	t     *testing.T
	ctx   context.Context
	store *sqlite.Store
	clock *storetest.Clock
	svc   *update.Service
}

func newHarness(t *testing.T, cfg update.Config) *harness {
	t.Helper()
	store, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "fota.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	clock := storetest.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	store.SetClock(clock.Now)
	cfg.Store, cfg.Now = store, clock.Now
	return &harness{t: t, ctx: context.Background(), store: store, clock: clock, svc: update.New(cfg)}
}

func (h *harness) release(version string, edit func(*fota.Release)) *fota.Release {
	h.t.Helper()
	r := storetest.NewRelease("esp32", version)
	if edit != nil {
		edit(r)
	}
	if err := h.store.CreateRelease(h.ctx, r); err != nil {
		h.t.Fatal(err)
	}
	// As publish --rollout all: every device at once, no gate.
	if _, _, err := h.svc.CreateRollout(h.ctx, update.RolloutSpec{Release: r.Version, Hardware: r.Hardware, MaxFailures: "none",
		MinOutcomes: -1, Supersede: true}); err != nil {
		h.t.Fatal(err)
	}
	return r
}

func (h *harness) device(id, api string) {
	h.t.Helper()
	d := storetest.NewDevice(id)
	d.API = api
	if err := h.store.CreateDevice(h.ctx, d); err != nil {
		h.t.Fatal(err)
	}
	if err := h.svc.JoinRollouts(h.ctx, d); err != nil {
		h.t.Fatal(err)
	}
}

// check checks in and wants no error.
func (h *harness) check(id, api, running string) (*update.Offer, string) {
	h.t.Helper()
	offer, why, err := h.svc.Check(h.ctx, update.CheckIn{DeviceID: id, API: api, Running: running})
	if err != nil {
		h.t.Fatalf("%s checks in on %s running %s: %v", id, api, running, err)
	}
	return offer, why
}

func (h *harness) wantOffer(id, api, running, version string) *update.Offer {
	h.t.Helper()
	offer, why := h.check(id, api, running)
	if offer == nil || offer.Release.Version != version {
		h.t.Fatalf("%s on %s running %s: offered %v (%s), want %s", id, api, running, offer, why, version)
	}
	return offer
}

func (h *harness) wantNoOffer(id, api, running, because string) {
	h.t.Helper()
	offer, why := h.check(id, api, running)
	if offer != nil {
		h.t.Fatalf("%s on %s running %s: offered %s, want none", id, api, running, offer.Release.Version)
	}
	if !strings.Contains(why, because) {
		h.t.Fatalf("%s on %s: no offer because %q, want it to say %q", id, api, why, because)
	}
}

// served records that every chunk of the session was served.
func (h *harness) served(sess *fota.Session, r *fota.Release) {
	h.t.Helper()
	if err := h.store.RecordProgress(h.ctx, []fota.Progress{{SessionID: sess.ID, Next: r.Chunks()}}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) report(sess *fota.Session, api, state string) error {
	return h.svc.Report(h.ctx, update.Report{Session: sess, API: api, State: state, Reason: "test"})
}

func (h *harness) deviceNow(id string) *fota.Device {
	h.t.Helper()
	d, err := h.store.Device(h.ctx, id)
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := fota.ErrorCode(err); got != code {
		t.Fatalf("error %v has code %q, want %q", err, got, code)
	}
}

// The attack reproduced against the old server: an unauthenticated
// /ota/check then /ota/complete {"boot_status":"failed"} with only a
// native device's id excluded the release from it for good.
func TestForgedFailureAgainstNativeDevice(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.release("1.0.4", nil)
	h.device("d1", fota.APINative)

	_, _, err := h.svc.Check(h.ctx, update.CheckIn{DeviceID: "d1", API: fota.APIEcoWatt, Running: "1.0.3"})
	wantCode(t, err, fota.EFORBIDDEN)
	if !strings.Contains(fota.ErrorMessage(err), "fota device set --id d1 --api") {
		t.Fatalf("refusal does not say what to do: %v", err)
	}
	// Its native session cannot be reported on over the EcoWatt API either.
	offer := h.wantOffer("d1", fota.APINative, "1.0.3", "1.0.4")
	wantCode(t, h.report(offer.Session, fota.APIEcoWatt, fota.SessionRolledBack), fota.ENOTFOUND)
	if sess, _ := h.store.Session(h.ctx, offer.Session.ID); sess.State != fota.SessionOpen {
		t.Fatalf("native session is %s after a forged report", sess.State)
	}
	if rejected, _ := h.store.RejectedReleases(h.ctx, "d1"); len(rejected) != 0 {
		t.Fatalf("forged report rejected %v", rejected)
	}
	h.wantOffer("d1", fota.APINative, "1.0.3", "1.0.4")
}

// A device allowed both APIs: EcoWatt-API requests reach it, but cannot
// end its native session, change its recorded version, or hold a native
// update back.
func TestEcoWattRequestsCannotTouchNativeSideOfBothDevice(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.release("1.0.4", nil)
	h.device("d1", fota.APIBoth)

	native := h.wantOffer("d1", fota.APINative, "1.0.3", "1.0.4")
	// (a) An EcoWatt check-in does not replace the native session.
	h.wantNoOffer("d1", fota.APIEcoWatt, "1.0.3", "nothing to install now")
	if sess, _ := h.store.Session(h.ctx, native.Session.ID); sess.State != fota.SessionOpen {
		t.Fatalf("native session is %s after an EcoWatt check-in", sess.State)
	}
	// (c) A relabelled check-in does not change the recorded version.
	h.wantNoOffer("d1", fota.APIEcoWatt, "9.9.9", "")
	if d := h.deviceNow("d1"); d.Version != "1.0.3" {
		t.Fatalf("unauthenticated check-in recorded version %s", d.Version)
	}
	// The authenticated device ends its own session; then an EcoWatt
	// session opens, fails by an unauthenticated report, and (b) holds the
	// release back on the EcoWatt API only.
	if err := h.report(native.Session, fota.APINative, fota.SessionFailed); err != nil {
		t.Fatal(err)
	}
	legacy := h.wantOffer("d1", fota.APIEcoWatt, "1.0.3", "1.0.4")
	if err := h.report(legacy.Session, fota.APIEcoWatt, fota.SessionRolledBack); err != nil {
		t.Fatal(err)
	}
	h.wantNoOffer("d1", fota.APIEcoWatt, "1.0.3", "nothing to install")
	if bs, _ := h.store.Backoffs(h.ctx, "d1"); len(bs) != 1 {
		t.Fatalf("backoffs %+v, want the EcoWatt-API one", bs)
	}
	h.wantOffer("d1", fota.APINative, "1.0.3", "1.0.4")
	if d := h.deviceNow("d1"); d.Version != "1.0.3" {
		t.Fatalf("version %s", d.Version)
	}
}

// An ecowatt device's reported failure backs the release off, doubling
// from an hour to a day, never for good; an operator can clear it.
func TestEcoWattFailureBacksOffNotForever(t *testing.T) {
	h := newHarness(t, update.Config{LegacyPerDevice: update.Rate{Burst: 100, Every: time.Second}})
	h.release("1.0.4", nil)
	h.device("legacy", fota.APIEcoWatt)

	wantWaits := []time.Duration{time.Hour, 2 * time.Hour, 4 * time.Hour, 8 * time.Hour, 16 * time.Hour, 24 * time.Hour, 24 * time.Hour}
	for i, wait := range wantWaits {
		offer := h.wantOffer("legacy", fota.APIEcoWatt, "1.0.3", "1.0.4")
		state := fota.SessionRolledBack
		if i%2 == 1 {
			state = fota.SessionFailed // /ota/verify {"verified": false}
		}
		if err := h.report(offer.Session, fota.APIEcoWatt, state); err != nil {
			t.Fatal(err)
		}
		h.wantNoOffer("legacy", fota.APIEcoWatt, "1.0.3", "held back until")
		h.clock.Advance(wait - time.Minute)
		h.wantNoOffer("legacy", fota.APIEcoWatt, "1.0.3", "held back until")
		h.clock.Advance(time.Minute)
	}
	if rejected, _ := h.store.RejectedReleases(h.ctx, "legacy"); len(rejected) != 0 {
		t.Fatalf("unauthenticated failures rejected %v for good", rejected)
	}
	offer := h.wantOffer("legacy", fota.APIEcoWatt, "1.0.3", "1.0.4")
	if err := h.report(offer.Session, fota.APIEcoWatt, fota.SessionRolledBack); err != nil {
		t.Fatal(err)
	}
	h.wantNoOffer("legacy", fota.APIEcoWatt, "1.0.3", "held back until")
	if n, err := h.svc.ClearBackoffs(h.ctx, "legacy"); err != nil || n != 1 {
		t.Fatalf("clear: %d, %v", n, err)
	}
	h.wantOffer("legacy", fota.APIEcoWatt, "1.0.3", "1.0.4")
}

// Only an authenticated rollback excludes a release for good.
func TestAuthenticatedRollbackExcludesForGood(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.release("1.0.4", nil)
	h.device("d1", fota.APINative)
	offer := h.wantOffer("d1", fota.APINative, "1.0.3", "1.0.4")
	if err := h.report(offer.Session, fota.APINative, fota.SessionRolledBack); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(30 * 24 * time.Hour)
	h.wantNoOffer("d1", fota.APINative, "1.0.3", "rolled back from")
	h.release("1.0.5", nil)
	h.wantOffer("d1", fota.APINative, "1.0.3", "1.0.5")
}

// The original firmware reports no outcome: its check-ins do.
func TestLegacyOutcomesFromCheckIns(t *testing.T) {
	h := newHarness(t, update.Config{})
	r := h.release("1.0.4", nil)
	h.device("good", fota.APIEcoWatt)
	h.device("stuck", fota.APIEcoWatt)

	// Checking in running the target confirms the session, once every
	// chunk was served: before that the claim ends nothing.
	good := h.wantOffer("good", fota.APIEcoWatt, "1.0.3", "1.0.4")
	h.wantNoOffer("good", fota.APIEcoWatt, "1.0.4", "nothing to install now")
	if sess, _ := h.store.Session(h.ctx, good.Session.ID); sess.State != fota.SessionOpen {
		t.Fatalf("session after claiming the target with no chunk served: %s", sess.State)
	}
	if again := h.wantOffer("good", fota.APIEcoWatt, "1.0.3", "1.0.4"); again.Session.ID != good.Session.ID {
		t.Fatal("the device did not resume its session after a premature claim")
	}
	h.served(good.Session, r)
	h.wantNoOffer("good", fota.APIEcoWatt, "1.0.4", "nothing to install now")
	if sess, _ := h.store.Session(h.ctx, good.Session.ID); sess.State != fota.SessionConfirmed {
		t.Fatalf("session after checking in on the target: %s", sess.State)
	}
	if d := h.deviceNow("good"); d.Version != "1.0.4" || d.SecurityCounter != 0 {
		t.Fatalf("confirmed ecowatt device: version %s counter %d; want 1.0.4 and the counter untouched", d.Version, d.SecurityCounter)
	}

	// Build metadata is not part of the version: 1.0.4+b7 runs 1.0.4.
	h.device("meta", fota.APIEcoWatt)
	meta := h.wantOffer("meta", fota.APIEcoWatt, "1.0.3", "1.0.4")
	h.served(meta.Session, r)
	h.wantNoOffer("meta", fota.APIEcoWatt, "1.0.4+b7", "")
	if sess, _ := h.store.Session(h.ctx, meta.Session.ID); sess.State != fota.SessionConfirmed {
		t.Fatalf("session after checking in on 1.0.4+b7: %s", sess.State)
	}

	// Still on the old version: resumed while chunks remain, and within
	// the grace after the last one; then not applied, and backed off.
	stuck := h.wantOffer("stuck", fota.APIEcoWatt, "1.0.3", "1.0.4")
	h.clock.Advance(time.Hour)
	if again := h.wantOffer("stuck", fota.APIEcoWatt, "1.0.3", "1.0.4"); again.Session.ID != stuck.Session.ID {
		t.Fatal("a device with chunks left did not resume its session")
	}
	h.served(stuck.Session, r)
	h.clock.Advance(update.DefaultNotAppliedGrace - time.Minute)
	if again := h.wantOffer("stuck", fota.APIEcoWatt, "1.0.3", "1.0.4"); again.Session.ID != stuck.Session.ID {
		t.Fatal("within the grace the session was not resumed")
	}
	h.clock.Advance(2 * time.Minute)
	h.wantNoOffer("stuck", fota.APIEcoWatt, "1.0.3", "held back until")
	sess, _ := h.store.Session(h.ctx, stuck.Session.ID)
	if sess.State != fota.SessionNotApplied || !strings.Contains(sess.Reason, "still checks in running 1.0.3") {
		t.Fatalf("session %s (%s), want %s", sess.State, sess.Reason, fota.SessionNotApplied)
	}
}

// A loop of check/complete from one client cannot grow the database
// without bound: new sessions are rate limited per device and overall.
func TestLegacyCheckFloodIsRateLimited(t *testing.T) {
	h := newHarness(t, update.Config{LegacyPerDevice: update.Rate{Burst: 3, Every: 10 * time.Minute},
		LegacyOverall: update.Rate{Burst: 5, Every: time.Second}})
	r := h.release("1.0.4", nil)
	for i := range 4 {
		h.device(fmt.Sprintf("legacy%d", i), fota.APIEcoWatt)
	}
	opened := 0
	var limited error
	for range 50 {
		// check, then "complete success" without ever running 1.0.4: the
		// next check reports 1.0.3 again and wants a new session.
		offer, _, err := h.svc.Check(h.ctx, update.CheckIn{DeviceID: "legacy0", API: fota.APIEcoWatt, Running: "1.0.3"})
		if err != nil {
			limited = err
			break
		}
		opened++
		h.served(offer.Session, r)
		if err := h.report(offer.Session, fota.APIEcoWatt, fota.SessionConfirmed); err != nil {
			t.Fatal(err)
		}
	}
	if opened != 3 {
		t.Fatalf("one device opened %d sessions in a burst, want 3", opened)
	}
	wantCode(t, limited, fota.ETOOMANY)
	var fe *fota.Error
	if !errors.As(limited, &fe) || fe.RetryAfter <= 0 || fe.RetryAfter > 10*time.Minute {
		t.Fatalf("refusal %v has RetryAfter %v", limited, fe.RetryAfter)
	}
	// Resuming an open session is never limited.
	first := h.wantOffer("legacy1", fota.APIEcoWatt, "1.0.3", "1.0.4")
	for range 10 {
		if again := h.wantOffer("legacy1", fota.APIEcoWatt, "1.0.3", "1.0.4"); again.Session.ID != first.Session.ID {
			t.Fatal("resume opened a new session")
		}
	}
	// The overall bucket (5) is now spent by legacy0's 3 and legacy1's 1.
	h.wantOffer("legacy2", fota.APIEcoWatt, "1.0.3", "1.0.4")
	_, _, err := h.svc.Check(h.ctx, update.CheckIn{DeviceID: "legacy3", API: fota.APIEcoWatt, Running: "1.0.3"})
	wantCode(t, err, fota.ETOOMANY)
	// An operator clearing a device's backoffs lets it open sessions again.
	if _, err := h.svc.ClearBackoffs(h.ctx, "legacy0"); err != nil {
		t.Fatal(err)
	}
	_, _, err = h.svc.Check(h.ctx, update.CheckIn{DeviceID: "legacy0", API: fota.APIEcoWatt, Running: "1.0.3"})
	wantCode(t, err, fota.ETOOMANY) // the overall bucket is still spent
	// Time refills both.
	h.clock.Advance(10 * time.Minute)
	h.wantOffer("legacy3", fota.APIEcoWatt, "1.0.3", "1.0.4")
	h.wantOffer("legacy0", fota.APIEcoWatt, "1.0.3", "1.0.4")
}

// The security-counter rule holds on both APIs: a release below the
// counter an authenticated confirmation stored is never offered.
func TestSecurityCounterOnBothAPIs(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.release("2.0.0", func(r *fota.Release) { r.SecurityCounter = 5 })
	h.device("d1", fota.APIBoth)
	offer := h.wantOffer("d1", fota.APINative, "1.0.3", "2.0.0")
	if err := h.report(offer.Session, fota.APINative, fota.SessionConfirmed); err != nil {
		t.Fatal(err)
	}
	if d := h.deviceNow("d1"); d.SecurityCounter != 5 || d.Version != "2.0.0" {
		t.Fatalf("after an authenticated confirmation: %+v", d)
	}
	h.release("2.1.0", func(r *fota.Release) { r.SecurityCounter = 3 })
	h.wantNoOffer("d1", fota.APIEcoWatt, "2.0.0", "nothing to install") // the reason is its native side's
	h.wantNoOffer("d1", fota.APINative, "2.0.0", "below the device's 5")
	// An ecowatt device registered with a counter is held to it.
	legacy := storetest.NewDevice("legacy")
	legacy.API, legacy.SecurityCounter, legacy.Version = fota.APIEcoWatt, 5, "2.0.0"
	if err := h.store.CreateDevice(h.ctx, legacy); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.JoinRollouts(h.ctx, legacy); err != nil {
		t.Fatal(err)
	}
	h.wantNoOffer("legacy", fota.APIEcoWatt, "2.0.0", "below the device's 5")
	// A native check-in's own counter counts too.
	h.device("d2", fota.APINative)
	_, why, err := h.svc.Check(h.ctx, update.CheckIn{DeviceID: "d2", API: fota.APINative, Running: "1.0.3", SecurityCounter: 7})
	if err != nil || !strings.Contains(why, "below the device's 7") {
		t.Fatalf("reported counter 7: %q, %v", why, err)
	}
}

// The original firmware decodes chunks into 1,024 + 16 bytes and checks
// only the legacy RSA signature: releases it cannot take stay native-only.
func TestEcoWattOffersOnlyWhatTheOriginalFirmwareTakes(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.release("1.0.4", func(r *fota.Release) { r.ChunkSize, r.CiphertextSize = 4096, 8192 })
	h.device("d1", fota.APIBoth)
	h.device("legacy", fota.APIEcoWatt)
	h.wantNoOffer("legacy", fota.APIEcoWatt, "1.0.3", "4096-byte chunks")
	h.wantNoOffer("d1", fota.APIEcoWatt, "1.0.3", "nothing to install") // a both device is told nothing more
	h.wantOffer("d1", fota.APINative, "1.0.3", "1.0.4")
	h.release("1.0.5", func(r *fota.Release) { r.LegacySignature, r.SignatureAlg = nil, "ed25519" })
	h.device("d2", fota.APIEcoWatt)
	h.wantNoOffer("d2", fota.APIEcoWatt, "1.0.3", "no legacy RSA signature")
}

// Narrowing a device's policy ends its sessions on the API it loses.
func TestNarrowingPolicyEndsSessions(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.release("1.0.4", nil)
	h.device("d1", fota.APIEcoWatt)
	offer := h.wantOffer("d1", fota.APIEcoWatt, "1.0.3", "1.0.4")
	if err := h.svc.SetAPIPolicy(h.ctx, "d1", fota.APINative); err != nil {
		t.Fatal(err)
	}
	if sess, _ := h.store.Session(h.ctx, offer.Session.ID); sess.State != fota.SessionAbandoned {
		t.Fatalf("session %s after narrowing the policy", sess.State)
	}
	_, _, err := h.svc.Check(h.ctx, update.CheckIn{DeviceID: "d1", API: fota.APIEcoWatt, Running: "1.0.3"})
	wantCode(t, err, fota.EFORBIDDEN)
	wantCode(t, h.svc.SetAPIPolicy(h.ctx, "d1", "both-and-more"), fota.EINVALID)
}

// An unauthenticated success report before every chunk was served is
// refused: it would end the session and make the device open (and pay
// for) a new one.
func TestEcoWattSuccessBeforeDownloadIsRefused(t *testing.T) {
	h := newHarness(t, update.Config{})
	r := h.release("1.0.4", nil)
	h.device("legacy", fota.APIEcoWatt)
	offer := h.wantOffer("legacy", fota.APIEcoWatt, "1.0.3", "1.0.4")
	wantCode(t, h.report(offer.Session, fota.APIEcoWatt, fota.SessionConfirmed), fota.ECONFLICT)
	if sess, _ := h.store.Session(h.ctx, offer.Session.ID); sess.State != fota.SessionOpen {
		t.Fatalf("session %s after a premature success report", sess.State)
	}
	h.served(offer.Session, r)
	if err := h.report(offer.Session, fota.APIEcoWatt, fota.SessionConfirmed); err != nil {
		t.Fatal(err)
	}
}

// Repeating a report records it once: a loop of /ota/verify cannot grow
// the history.
func TestRepeatedReportsRecordOnce(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.release("1.0.4", nil)
	h.device("legacy", fota.APIEcoWatt)
	offer := h.wantOffer("legacy", fota.APIEcoWatt, "1.0.3", "1.0.4")
	for range 50 {
		if err := h.report(offer.Session, fota.APIEcoWatt, fota.SessionVerified); err != nil {
			t.Fatal(err)
		}
	}
	// Out of order changes nothing either.
	if err := h.report(offer.Session, fota.APIEcoWatt, fota.SessionDownloaded); err != nil {
		t.Fatal(err)
	}
	evs, err := h.store.Events(h.ctx, fota.EventFilter{DeviceID: "legacy"})
	if err != nil {
		t.Fatal(err)
	}
	verified := 0
	for _, e := range evs {
		if e.Kind == fota.EventVerified || e.Kind == fota.EventDownloaded {
			verified++
		}
	}
	if verified != 1 {
		t.Fatalf("%d verified/downloaded events from 50 verified reports and one late downloaded, want 1", verified)
	}
	if sess, _ := h.store.Session(h.ctx, offer.Session.ID); sess.State != fota.SessionVerified {
		t.Fatalf("session %s", sess.State)
	}
}

// Forged check-ins can fill only part of the session cap: a native device
// can always open one.
func TestEcoWattSessionsLeaveRoomForNative(t *testing.T) {
	h := newHarness(t, update.Config{MaxSessions: 4})
	h.release("1.0.4", nil)
	for i := range 4 {
		h.device(fmt.Sprintf("legacy%d", i), fota.APIEcoWatt)
	}
	h.device("native", fota.APINative)
	for i := range 3 {
		h.wantOffer(fmt.Sprintf("legacy%d", i), fota.APIEcoWatt, "1.0.3", "1.0.4")
	}
	_, _, err := h.svc.Check(h.ctx, update.CheckIn{DeviceID: "legacy3", API: fota.APIEcoWatt, Running: "1.0.3"})
	wantCode(t, err, fota.EUNAVAILABLE)
	h.wantOffer("native", fota.APINative, "1.0.3", "1.0.4")
}

// A device allowed both APIs: an unauthenticated check-in is not told
// what its native side does.
func TestEcoWattAnswersSayNothingOfTheNativeSide(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.release("1.0.4", nil)
	h.device("d1", fota.APIBoth)
	offer := h.wantOffer("d1", fota.APINative, "1.0.3", "1.0.4")
	_, why := h.check("d1", fota.APIEcoWatt, "1.0.3")
	if strings.Contains(why, "native") || strings.Contains(why, "1.0.4") {
		t.Fatalf("an unauthenticated check-in was told %q", why)
	}
	if err := h.report(offer.Session, fota.APINative, fota.SessionRolledBack); err != nil {
		t.Fatal(err)
	}
	if _, why := h.check("d1", fota.APIEcoWatt, "1.0.3"); strings.Contains(why, "rolled back") {
		t.Fatalf("an unauthenticated check-in was told %q", why)
	}
}

// An operator who clears a device's backoffs is not then refused by the
// device's rate limit.
func TestClearBackoffsResetsTheDeviceRateLimit(t *testing.T) {
	h := newHarness(t, update.Config{LegacyPerDevice: update.Rate{Burst: 2, Every: time.Hour}})
	r := h.release("1.0.4", nil)
	h.device("legacy", fota.APIEcoWatt)
	for range 2 {
		offer := h.wantOffer("legacy", fota.APIEcoWatt, "1.0.3", "1.0.4")
		h.served(offer.Session, r)
		if err := h.report(offer.Session, fota.APIEcoWatt, fota.SessionConfirmed); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := h.svc.Check(h.ctx, update.CheckIn{DeviceID: "legacy", API: fota.APIEcoWatt, Running: "1.0.3"})
	wantCode(t, err, fota.ETOOMANY)
	if _, err := h.svc.ClearBackoffs(h.ctx, "legacy"); err != nil {
		t.Fatal(err)
	}
	h.wantOffer("legacy", fota.APIEcoWatt, "1.0.3", "1.0.4")
}

// A refused open (the EcoWatt share of the session cap is full) costs the
// device none of its rate limit: its polite retries are not turned into a
// ten-minute lockout.
func TestRefusedOpenCostsNoRateLimit(t *testing.T) {
	h := newHarness(t, update.Config{MaxSessions: 2, LegacyPerDevice: update.Rate{Burst: 3, Every: 10 * time.Minute}})
	h.release("1.0.4", nil)
	h.device("legacy0", fota.APIEcoWatt)
	h.device("legacy1", fota.APIEcoWatt)
	h.device("native", fota.APINative)
	h.wantOffer("legacy0", fota.APIEcoWatt, "1.0.3", "1.0.4") // takes the one EcoWatt place of two
	for range 10 {
		_, _, err := h.svc.Check(h.ctx, update.CheckIn{DeviceID: "legacy1", API: fota.APIEcoWatt, Running: "1.0.3"})
		wantCode(t, err, fota.EUNAVAILABLE)
	}
	h.wantOffer("native", fota.APINative, "1.0.3", "1.0.4") // the place kept for native devices
	if got := update.LegacyCap(2); got != 1 {
		t.Fatalf("LegacyCap(2) = %d, want 1", got)
	}
	for maxSessions, want := range map[int]int{3: 2, 4: 3, 8: 6, 20000: 15000} {
		if got := update.LegacyCap(maxSessions); got != want {
			t.Fatalf("LegacyCap(%d) = %d, want %d", maxSessions, got, want)
		}
	}
}

// An unauthenticated check-in does not mark a native-capable device seen.
func TestEcoWattCheckInLeavesNativeDeviceUnseen(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.release("1.0.4", nil)
	h.device("d1", fota.APIBoth)
	h.check("d1", fota.APIEcoWatt, "1.0.3")
	if d := h.deviceNow("d1"); !d.LastSeen.IsZero() {
		t.Fatalf("last seen %v after an unauthenticated check-in", d.LastSeen)
	}
	h.check("d1", fota.APINative, "1.0.3")
	if d := h.deviceNow("d1"); d.LastSeen.IsZero() {
		t.Fatal("an authenticated check-in did not mark the device seen")
	}
}

// A pin that could never take effect is refused with the reason.
func TestPinRefusesWhatCouldNeverTakeEffect(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.release("1.0.2", nil)
	h.release("1.0.4", nil)
	h.release("1.0.5", func(r *fota.Release) { r.SecurityCounter = 0 })
	h.device("d1", fota.APINative)
	for _, tc := range []struct{ version, want string }{
		{"1.0.2", "not newer"},
		{"1.0.3", "no release 1.0.3"},
		{"9.9.9", "no release 9.9.9"},
	} {
		err := h.svc.Pin(h.ctx, "d1", tc.version)
		wantCode(t, err, fota.EINVALID)
		if !strings.Contains(fota.ErrorMessage(err), tc.want) {
			t.Fatalf("pin %s: %v, want %q", tc.version, err, tc.want)
		}
	}
	// Rolled back on the native API: never offered again, so no pin.
	offer := h.wantOffer("d1", fota.APINative, "1.0.3", "1.0.5")
	if err := h.report(offer.Session, fota.APINative, fota.SessionRolledBack); err != nil {
		t.Fatal(err)
	}
	err := h.svc.Pin(h.ctx, "d1", "1.0.5")
	if fota.ErrorCode(err) != fota.EINVALID || !strings.Contains(fota.ErrorMessage(err), "rolled back") {
		t.Fatalf("pin to a rolled-back release: %v", err)
	}
	// Below the device's counter.
	d := storetest.NewDevice("d2")
	d.API, d.SecurityCounter = fota.APINative, 3
	if err := h.store.CreateDevice(h.ctx, d); err != nil {
		t.Fatal(err)
	}
	err = h.svc.Pin(h.ctx, "d2", "1.0.4")
	if fota.ErrorCode(err) != fota.EINVALID || !strings.Contains(fota.ErrorMessage(err), "below device d2's 3") {
		t.Fatalf("pin below the counter: %v", err)
	}
	if err := h.svc.Pin(h.ctx, "d1", "1.0.4"); err != nil {
		t.Fatal(err)
	}
	h.wantOffer("d1", fota.APINative, "1.0.3", "1.0.4")
}

// A device that refuses an offer says so, and is not offered it again.
func TestRefusedReleaseIsNotOfferedAgain(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.release("1.0.4", nil)
	h.device("d1", fota.APINative)
	offer := h.wantOffer("d1", fota.APINative, "1.0.3", "1.0.4")
	if err := h.svc.Report(h.ctx, update.Report{Session: offer.Session, API: fota.APINative, State: fota.SessionRefused,
		Reason: "image of 5 MiB does not fit the 4 MiB slot"}); err != nil {
		t.Fatal(err)
	}
	h.wantNoOffer("d1", fota.APINative, "1.0.3", "refused")
	h.release("1.0.5", nil)
	h.wantOffer("d1", fota.APINative, "1.0.3", "1.0.5")
}
