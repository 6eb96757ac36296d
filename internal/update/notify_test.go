package update_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/update"
	"github.com/ecowatt/fota/protocol"
)

// recorder is a fota.Notifier that keeps what it was asked to send.
type recorder struct {
	mu   sync.Mutex
	sent []sent
}

type sent struct {
	ids []string
	n   protocol.Notification
}

func (r *recorder) Notify(ids []string, n protocol.Notification) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, sent{slices.Sorted(slices.Values(ids)), n})
}

// take returns what was sent since the last take, once the service has
// handed over every notification of past transitions.
func (r *recorder) take(svc *update.Service) []sent {
	svc.WaitNotified()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.sent
	r.sent = nil
	return out
}

func wantSent(t *testing.T, what string, got []sent, reason string, rollout int64, ids []string) {
	t.Helper()
	if len(got) != 1 {
		t.Fatalf("%s: %d notifications, want 1: %+v", what, len(got), got)
	}
	g := got[0]
	if g.n.V != 1 || g.n.Reason != reason || g.n.Rollout != rollout || !slices.Equal(g.ids, slices.Sorted(slices.Values(ids))) {
		t.Fatalf("%s: sent %+v to %v, want %q for rollout %d to %v", what, g.n, g.ids, reason, rollout, ids)
	}
}

// TestNotifications: each rollout transition and pin wakes exactly the
// devices it concerns, and nothing else does.
func TestNotifications(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, update.Config{Notifier: rec})
	h.publish("1.0.4")
	ids := h.fleet(20, nil)
	r := h.rollout(update.RolloutSpec{Release: "1.0.4", Waves: "4,all", Soak: time.Hour, MinOutcomes: 2, MaxFailures: "1"})
	waves := h.waveOf(r.ID)
	var first, second []string
	for _, id := range ids {
		if waves[id] == 1 {
			first = append(first, id)
		} else {
			second = append(second, id)
		}
	}
	wantSent(t, "rollout created", rec.take(h.svc), protocol.NotifyRollout, r.ID, first)

	// Check-ins, outcomes and ticks that move nothing wake nobody.
	for _, id := range first[:2] {
		h.outcome(id, fota.SessionConfirmed)
	}
	h.tick()
	if got := rec.take(h.svc); len(got) != 0 {
		t.Fatalf("outcomes and a holding gate notified %+v", got)
	}

	// Wave 2 opens after the soak: its members, not wave 1's.
	h.clock.Advance(2 * time.Hour)
	h.tick()
	if v := h.view(r.ID); v.Rollout.Wave != 2 {
		t.Fatalf("wave %d after the soak", v.Rollout.Wave)
	}
	wantSent(t, "wave 2 opened", rec.take(h.svc), protocol.NotifyRollout, r.ID, second)

	// Paused: the devices with a session open.
	offered := second[:3]
	for _, id := range offered {
		h.wantOffer(id, fota.APINative, "1.0.3", "1.0.4")
	}
	if _, err := h.svc.PauseRollout(h.ctx, r.ID, "looking at a report"); err != nil {
		t.Fatal(err)
	}
	wantSent(t, "paused", rec.take(h.svc), protocol.NotifyPaused, r.ID, offered)

	// Resumed: the members of open waves not offered yet (the first two
	// canaries confirmed; the other two never checked in).
	if _, err := h.svc.ResumeRollout(h.ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	var pending []string
	pending = append(pending, first[2:]...)
	pending = append(pending, second[3:]...)
	wantSent(t, "resumed", rec.take(h.svc), protocol.NotifyRollout, r.ID, pending)

	// Halted by its gate: the devices whose downloads it ended.
	h.outcome(second[3], fota.SessionRolledBack)
	h.outcome(second[4], fota.SessionRolledBack)
	if v := h.view(r.ID); v.Rollout.State != fota.RolloutHalted {
		t.Fatalf("after two rollbacks the rollout is %s", v.Rollout.State)
	}
	wantSent(t, "halted", rec.take(h.svc), protocol.NotifyHalted, r.ID, offered)

	// Aborted: a halted rollout has no sessions left, so nobody.
	if _, err := h.svc.AbortRollout(h.ctx, r.ID, "bad build"); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(h.svc); len(got) != 0 {
		t.Fatalf("aborting a rollout with no session open notified %+v", got)
	}

	// A pin and an unpin wake the device.
	h.publish("1.0.6")
	if err := h.svc.Pin(h.ctx, ids[0], "1.0.6"); err != nil {
		t.Fatal(err)
	}
	wantSent(t, "pinned", rec.take(h.svc), protocol.NotifyPinned, 0, ids[:1])
	if err := h.svc.Unpin(h.ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	wantSent(t, "unpinned", rec.take(h.svc), protocol.NotifyPinned, 0, ids[:1])
}

// TestNotifyAbortEndsDownloads: an abort wakes the devices downloading,
// so they stop at once.
func TestNotifyAbortEndsDownloads(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, update.Config{Notifier: rec})
	h.publish("1.0.4")
	ids := h.fleet(5, nil)
	r := h.rollout(update.RolloutSpec{Release: "1.0.4"})
	rec.take(h.svc)
	for _, id := range ids[:2] {
		h.wantOffer(id, fota.APINative, "1.0.3", "1.0.4")
	}
	if _, err := h.svc.AbortRollout(h.ctx, r.ID, "bad build"); err != nil {
		t.Fatal(err)
	}
	wantSent(t, "aborted", rec.take(h.svc), protocol.NotifyAborted, r.ID, ids[:2])
}

// TestNotifySpread: a large fan-out asks devices to spread their check-ins
// at the configured rate, capped.
func TestNotifySpread(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, update.Config{Notifier: rec, NotifyRate: 10})
	h.publish("1.0.4")
	h.fleet(25, nil)
	h.rollout(update.RolloutSpec{Release: "1.0.4"})
	got := rec.take(h.svc)
	if len(got) != 1 || got[0].n.SpreadMS != 2500 || len(got[0].ids) != 25 {
		t.Fatalf("25 devices at 10 a second: %+v", got)
	}
}

// TestNotifyWhenWindowOpens: a rollout created outside its maintenance
// window wakes nobody (nothing would be offered); when the window opens,
// the next tick wakes the devices not offered yet, once.
func TestNotifyWhenWindowOpens(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, update.Config{Notifier: rec}) // Tuesday 12:00 UTC
	h.publish("1.0.4")
	ids := h.fleet(3, nil)
	r := h.rollout(update.RolloutSpec{Release: "1.0.4", Windows: []string{"Mon-Fri 13:00-14:00 UTC"}})
	h.tick()
	if got := rec.take(h.svc); len(got) != 0 {
		t.Fatalf("outside its window the rollout woke %+v", got)
	}
	h.clock.Advance(30 * time.Minute)
	h.tick()
	if got := rec.take(h.svc); len(got) != 0 {
		t.Fatalf("before the window opened: %+v", got)
	}
	h.clock.Advance(40 * time.Minute) // 13:10: open
	h.tick()
	wantSent(t, "window opened", rec.take(h.svc), protocol.NotifyRollout, r.ID, ids)
	h.clock.Advance(5 * time.Second)
	h.tick()
	if got := rec.take(h.svc); len(got) != 0 {
		t.Fatalf("a tick inside the open window woke devices again: %+v", got)
	}
}
