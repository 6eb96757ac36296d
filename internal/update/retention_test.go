package update_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/update"
)

// A withdrawn release is offered to nobody from that moment: the session
// downloading it ends with the reason, its rollouts end (the devices are
// told why), and a pin to it says it was withdrawn.
func TestWithdrawnReleaseIsNotOffered(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.release("1.0.4", nil)
	h.release("1.0.5", nil)
	h.device("d1", fota.APINative)
	h.device("pinned", fota.APINative)
	offer := h.wantOffer("d1", fota.APINative, "1.0.3", "1.0.5")
	if err := h.svc.Pin(h.ctx, "pinned", "1.0.5"); err != nil {
		t.Fatal(err)
	}

	rel, ended, err := h.svc.WithdrawRelease(h.ctx, "esp32", "1.0.5", "drains the battery")
	if err != nil {
		t.Fatal(err)
	}
	if ended != 1 || rel.Withdrawn.IsZero() {
		t.Fatalf("withdrawal ended %d sessions, withdrawn %v; want 1 and a time", ended, rel.Withdrawn)
	}
	sess, _ := h.store.Session(h.ctx, offer.Session.ID)
	if sess.State != fota.SessionAbandoned || !strings.Contains(sess.Reason, "drains the battery") {
		t.Fatalf("session of the withdrawn release: %s %q", sess.State, sess.Reason)
	}
	// Its rollout ended with it; the operator rolls out what is left.
	h.wantNoOffer("d1", fota.APINative, "1.0.3", "aborted: release withdrawn: drains the battery")
	if _, _, err := h.svc.CreateRollout(h.ctx, update.RolloutSpec{Release: "1.0.4", MinOutcomes: -1}); err != nil {
		t.Fatal(err)
	}
	h.wantOffer("d1", fota.APINative, "1.0.3", "1.0.4")
	h.wantNoOffer("pinned", fota.APINative, "1.0.3", "pinned to 1.0.5, which was withdrawn")
	err = h.svc.Pin(h.ctx, "d1", "1.0.5")
	wantCode(t, err, fota.EINVALID)
	if !strings.Contains(fota.ErrorMessage(err), "withdrawn") {
		t.Fatalf("pin to a withdrawn release: %v", err)
	}
	_, _, err = h.svc.WithdrawRelease(h.ctx, "esp32", "9.9.9", "")
	wantCode(t, err, fota.ENOTFOUND)
}

// A removed device is unknown to every device-facing call.
func TestRemovedDeviceIsRefused(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.release("1.0.4", nil)
	h.device("d1", fota.APIBoth)
	offer := h.wantOffer("d1", fota.APINative, "1.0.3", "1.0.4")
	n, err := h.svc.RemoveDevice(h.ctx, "d1")
	if err != nil || n != 1 {
		t.Fatalf("remove: %d sessions ended, %v", n, err)
	}
	for _, api := range []string{fota.APINative, fota.APIEcoWatt} {
		_, _, err = h.svc.Check(h.ctx, update.CheckIn{DeviceID: "d1", API: api, Running: "1.0.3"})
		wantCode(t, err, fota.ENOTFOUND)
	}
	wantCode(t, h.report(offer.Session, fota.APINative, fota.SessionConfirmed), fota.ENOTFOUND)
	wantCode(t, h.svc.Pin(h.ctx, "d1", "1.0.4"), fota.ENOTFOUND)
	if h.deviceNow("d1").Version != "1.0.3" {
		t.Fatal("a removed device's report changed it")
	}
}

// Prune deletes what is due as of the service's clock, a bounded number of
// rows per call, and never the session still active.
func TestPruneFollowsTheClockInBoundedTicks(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.release("1.0.4", nil)
	h.device("d1", fota.APINative)
	h.device("d2", fota.APINative)
	old := h.wantOffer("d1", fota.APINative, "1.0.3", "1.0.4")
	if err := h.report(old.Session, fota.APINative, fota.SessionConfirmed); err != nil {
		t.Fatal(err)
	}
	active := h.wantOffer("d2", fota.APINative, "1.0.3", "1.0.4")
	for range 9 {
		if err := h.store.AddEvent(h.ctx, &fota.Event{Kind: fota.EventFailed, Detail: "filler"}); err != nil {
			t.Fatal(err)
		}
	}
	keep := update.Retention{Events: 30 * 24 * time.Hour, Sessions: 30 * 24 * time.Hour, Batch: 2, BatchesPerTick: 3}

	// Nothing is due yet.
	if p, err := h.svc.Prune(h.ctx, keep); err != nil || p != (update.Pruned{}) {
		t.Fatalf("prune of young history: %+v, %v", p, err)
	}
	h.clock.Advance(31 * 24 * time.Hour)
	all, _ := h.store.Events(h.ctx, fota.EventFilter{Limit: 1000})
	p, err := h.svc.Prune(h.ctx, keep)
	if err != nil {
		t.Fatal(err)
	}
	if p.Events != 6 || p.Sessions != 1 {
		t.Fatalf("first tick pruned %+v; want 6 events (3 batches of 2) and the ended session", p)
	}
	for p.Events > 0 {
		if p, err = h.svc.Prune(h.ctx, keep); err != nil {
			t.Fatal(err)
		}
	}
	if left, _ := h.store.Events(h.ctx, fota.EventFilter{Limit: 1000}); len(left) != 0 {
		t.Fatalf("%d of %d events left after every tick", len(left), len(all))
	}
	if _, err := h.store.Session(h.ctx, old.Session.ID); fota.ErrorCode(err) != fota.ENOTFOUND {
		t.Fatalf("ended session after pruning: %v", err)
	}
	if s, err := h.store.Session(h.ctx, active.Session.ID); err != nil || !fota.SessionActive(s.State) {
		t.Fatalf("active session after pruning: %v, %v", s, err)
	}
}

// A removed device's tombstone goes once it is older than the sessions'
// retention.
func TestPruneRemovedDevices(t *testing.T) {
	h := newHarness(t, update.Config{})
	h.release("1.0.4", nil)
	h.device("d1", fota.APINative)
	if _, err := h.svc.RemoveDevice(h.ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	keep := update.Retention{Sessions: 7 * 24 * time.Hour}
	if p, _ := h.svc.Prune(h.ctx, keep); p.Devices != 0 {
		t.Fatalf("a fresh tombstone was pruned: %+v", p)
	}
	h.clock.Advance(8 * 24 * time.Hour)
	if p, _ := h.svc.Prune(h.ctx, keep); p.Devices != 1 {
		t.Fatalf("an old tombstone was not pruned: %+v", p)
	}
	_, err := h.store.Device(h.ctx, "d1")
	wantCode(t, err, fota.ENOTFOUND)
}

// Dashboard sessions go a day after they expired or were revoked, in
// bounded batches, even when every bit of history is kept; a session in
// force stays.
func TestPruneEndedWebSessions(t *testing.T) {
	h := newHarness(t, update.Config{})
	if err := h.store.CreateUser(h.ctx, &fota.User{Name: "ana", Role: fota.RoleAdmin, PasswordHash: "h"}); err != nil {
		t.Fatal(err)
	}
	now := h.clock.Now()
	session := func(n byte, life time.Duration) [32]byte {
		ws := &fota.WebSession{Hash: [32]byte{n}, UserName: "ana", Created: now, Expires: now.Add(life), PasswordHash: "h"}
		if err := h.store.CreateWebSession(h.ctx, ws); err != nil {
			t.Fatal(err)
		}
		return ws.Hash
	}
	for n := range byte(4) {
		session(n, time.Hour)
	}
	revoked := session(4, 30*24*time.Hour)
	inForce := session(5, 30*24*time.Hour)
	if err := h.store.RevokeWebSession(h.ctx, revoked); err != nil {
		t.Fatal(err)
	}
	keepAll := update.Retention{Batch: 2, BatchesPerTick: 2}

	h.clock.Advance(2 * time.Hour) // ended, but within the day
	if p, err := h.svc.Prune(h.ctx, keepAll); err != nil || p != (update.Pruned{}) {
		t.Fatalf("prune of sessions ended an hour ago: %+v, %v", p, err)
	}
	h.clock.Advance(update.WebSessionsKept)
	if p, err := h.svc.Prune(h.ctx, keepAll); err != nil || p != (update.Pruned{WebSessions: 4}) {
		t.Fatalf("first tick pruned %+v, %v; want 4 web sessions (2 batches of 2)", p, err)
	}
	if p, _ := h.svc.Prune(h.ctx, keepAll); p.WebSessions != 1 {
		t.Fatalf("second tick pruned %+v; want the 1 ended session left", p)
	}
	if _, err := h.store.WebSessionByHash(h.ctx, revoked); fota.ErrorCode(err) != fota.ENOTFOUND {
		t.Fatalf("a session revoked a day ago: %v", err)
	}
	if _, err := h.store.WebSessionByHash(h.ctx, inForce); err != nil {
		t.Fatalf("the session in force: %v", err)
	}
}

// RunPruner prunes ended dashboard sessions even when all history is kept.
func TestRunPrunerWithoutRetention(t *testing.T) {
	h := newHarness(t, update.Config{})
	if err := h.store.CreateUser(h.ctx, &fota.User{Name: "ana", Role: fota.RoleAdmin, PasswordHash: "h"}); err != nil {
		t.Fatal(err)
	}
	now := h.clock.Now()
	if err := h.store.CreateWebSession(h.ctx, &fota.WebSession{Hash: [32]byte{1}, UserName: "ana", Created: now, Expires: now.Add(time.Hour), PasswordHash: "h"}); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(update.WebSessionsKept + 2*time.Hour)
	ctx, cancel := context.WithCancel(h.ctx)
	var wg sync.WaitGroup
	wg.Go(func() { h.svc.RunPruner(ctx, update.Retention{}, time.Millisecond) })
	defer func() { cancel(); wg.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, err := h.store.WebSessionByHash(h.ctx, [32]byte{1})
		if fota.ErrorCode(err) == fota.ENOTFOUND {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the expired session is still there after 10 s: %v", err)
		}
		time.Sleep(time.Millisecond) // polling, not waiting for an effect
	}
	if evs, _ := h.store.Events(h.ctx, fota.EventFilter{Kind: fota.EventUserAdded}); len(evs) != 1 {
		t.Fatalf("history was pruned without retention: %d user-added events", len(evs))
	}
}

// RunPruner prunes on its timer and stops when its context ends.
func TestRunPrunerPrunesUntilStopped(t *testing.T) {
	h := newHarness(t, update.Config{Logger: slog.New(slog.DiscardHandler)})
	for range 5 {
		if err := h.store.AddEvent(h.ctx, &fota.Event{Kind: fota.EventFailed}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(h.ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); h.svc.RunPruner(ctx, update.Retention{MaxEvents: 2}, time.Millisecond) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, _ := h.store.Events(h.ctx, fota.EventFilter{})
		if len(evs) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events after 10 s, want 2", len(evs))
		}
		time.Sleep(time.Millisecond) // polling, not waiting for an effect
	}
	cancel()
	wg.Wait()
}
