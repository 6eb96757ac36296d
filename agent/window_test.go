package agent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/agent/slotfile"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/testserver"
)

// The server does not send install windows yet: these tests put a Tap in
// front of the real server, which adds install_after and install_until to
// its offers and changes nothing else.

func lastProgress(d *device) agent.Progress {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.progress[len(d.progress)-1]
}

// An offer is installed inside its window and only there: outside it the
// device downloads and verifies, keeps the image unmarked, says until when
// it waits, and installs at a check inside the window without downloading
// again, in the same session.
func TestInstallWindow(t *testing.T) {
	for _, row := range []struct {
		name   string
		skew   time.Duration
		window func(now time.Time) (after, until time.Time)
		// open, if set, is what opens the window after the first check;
		// it must then defer. Unset: the first check installs.
		open func(tap *testserver.Tap, skew *atomic.Int64, now time.Time)
	}{
		{name: "no window", window: func(time.Time) (time.Time, time.Time) { return time.Time{}, time.Time{} }},
		{name: "window open", window: func(now time.Time) (time.Time, time.Time) { return now.Add(-time.Minute), now.Add(time.Hour) }},
		{name: "window opens later; the device clock moves into it",
			window: func(now time.Time) (time.Time, time.Time) { return now.Add(30 * time.Second), time.Time{} },
			open:   func(_ *testserver.Tap, skew *atomic.Int64, _ time.Time) { skew.Store(int64(time.Minute)) }},
		{name: "window closed; the next answer has the next one",
			window: func(now time.Time) (time.Time, time.Time) { return time.Time{}, now.Add(-time.Minute) },
			open: func(tap *testserver.Tap, _ *atomic.Int64, now time.Time) {
				tap.SetWindow(now.Add(-time.Minute), now.Add(time.Hour))
			}},
		// Judged by the clock the server's Date corrected, not the device's own.
		{name: "window open by the server's clock, device clock an hour behind", skew: -time.Hour,
			window: func(now time.Time) (time.Time, time.Time) { return now.Add(-time.Minute), now.Add(time.Hour) }},
	} {
		t.Run(row.name, func(t *testing.T) {
			h := newHarness(t)
			h.publish("1.0.4", firmware.Healthy, 64<<10)
			tap := h.Tap()
			var skew atomic.Int64
			skew.Store(int64(row.skew))
			d := newDev(h, "dev1", agent.APINative)
			throughTap(d, tap, &skew)
			now := time.Now().Truncate(time.Second)
			after, until := row.window(now)
			tap.SetWindow(after, until)
			if err := d.powerOn(); err != nil {
				t.Fatal(err)
			}
			res, err := d.agent.CheckOnce(t_ctx)
			if row.open == nil {
				if err != nil || !res.Updated {
					t.Fatalf("check: %+v %v, want an install", res, err)
				}
				d.settle(t, nil)
				if d.running() != "1.0.4" {
					t.Fatalf("running %s", d.running())
				}
				return
			}

			var de *agent.DeferredError
			if !errors.Is(err, agent.ErrInstallDeferred) || !errors.As(err, &de) || res.Updated {
				t.Fatalf("check outside the window: %+v %v, want the install deferred", res, err)
			}
			if !de.Until.Equal(after) || !de.Closed.Equal(until) || de.Version != "1.0.4" || de.SessionID == "" || res.SessionID != de.SessionID {
				t.Fatalf("deferred %+v (result %+v), want until %v, closed %v", de, res, after, until)
			}
			if agent.IsFatal(err) || agent.IsRefusal(err) {
				t.Fatalf("a deferral counts as a failure: %v", err)
			}
			if p := lastProgress(d); p.State != agent.StateDeferred || p.Deferred != de || p.Version != "1.0.4" {
				t.Fatalf("last progress %+v", p)
			}
			st, _ := d.slots.Status()
			if st.Slots[1].State != agent.ImageEmpty || st.Next != 0 {
				t.Fatalf("the image was marked outside its window: %+v", st)
			}
			evs := h.events(d.id)
			if countOf(evs, "verified 1.0.4") != 1 || countOf(evs, "applied 1.0.4") != 0 || countOf(evs, "failed 1.0.4") != 0 {
				t.Fatalf("server events while deferred: %v", evs)
			}
			chunks := tap.ChunkRequests()
			if chunks == 0 {
				t.Fatal("no chunk was requested")
			}

			// Still outside: the same answer, and not a chunk more.
			res2, err := d.agent.CheckOnce(t_ctx)
			if !errors.Is(err, agent.ErrInstallDeferred) || res2.SessionID != res.SessionID {
				t.Fatalf("second check outside the window: %+v %v", res2, err)
			}
			if n := tap.ChunkRequests(); n != chunks {
				t.Fatalf("%d chunk requests after the download, want %d: downloaded again", n, chunks)
			}

			row.open(tap, &skew, now)
			res3, err := d.agent.CheckOnce(t_ctx)
			if err != nil || !res3.Updated || res3.SessionID != res.SessionID {
				t.Fatalf("check inside the window: %+v %v (first session %s)", res3, err, res.SessionID)
			}
			if n := tap.ChunkRequests(); n != chunks {
				t.Fatalf("%d chunk requests by the install, want %d", n, chunks)
			}
			d.settle(t, nil)
			evs = h.events(d.id)
			if d.running() != "1.0.4" || countOf(evs, "confirmed 1.0.4") != 1 || countOf(evs, "verified 1.0.4") != 1 {
				t.Fatalf("running %s; server events %v", d.running(), evs)
			}
		})
	}
}

// Run checks again when the window opens, not a CheckInterval later.
func TestRunChecksWhenTheWindowOpens(t *testing.T) {
	h := newHarness(t)
	h.publish("1.0.4", firmware.Healthy, 16<<10)
	tap := h.Tap()
	var skew atomic.Int64
	d := newDev(h, "dev1", agent.APINative)
	throughTap(d, tap, &skew)
	const wait = 40 * time.Second
	var slept []time.Duration
	hook := d.configHook
	d.configHook = func(c *agent.Config) {
		hook(c)
		c.Sleep = func(_ context.Context, d time.Duration) error {
			slept = append(slept, d)
			if len(slept) > 2 {
				return errors.New("too many waits")
			}
			skew.Add(int64(d)) // the time passes
			return nil
		}
	}
	tap.SetWindow(time.Now().Add(wait), time.Time{})
	if err := d.powerOn(); err != nil {
		t.Fatal(err)
	}
	rebooted := false
	if err := d.agent.Run(t_ctx, func() { rebooted = true }); err != nil || !rebooted {
		t.Fatalf("run: %v, rebooted %v", err, rebooted)
	}
	// The wait is measured from the check's end; up to an eighth of it is jitter.
	if len(slept) != 1 || slept[0] < wait-5*time.Second || slept[0] > wait+wait/8 {
		t.Fatalf("waited %v between checks, want one wait of about %v", slept, wait)
	}
	d.configHook = nil
	d.settle(t, nil)
	if d.running() != "1.0.4" {
		t.Fatalf("running %s", d.running())
	}
}

// A power cut at any persistent operation of the check that downloads,
// verifies and defers, and reboots while the device waits, lose nothing:
// once the verified download is recorded no chunk is downloaded again, and
// before that no more than a checkpoint's worth; the device installs when
// the window opens and runs only signed images.
func TestPowerCutWhileDeferred(t *testing.T) {
	size, _ := sweepSize()
	h := newHarness(t)
	publishCounted(h, firmware.Healthy, size)
	images := imagesOf(h, size, firmware.Healthy)
	tap := h.Tap()
	var skew atomic.Int64
	closed := func() { tap.SetWindow(time.Now().Add(time.Hour), time.Time{}) }
	deferredCheck := func(d *device) error {
		if err := d.powerOn(); err != nil {
			return err
		}
		_, err := d.agent.CheckOnce(t_ctx)
		return err
	}

	// The deferring check run cleanly: its operations, and the one after
	// which the verified download is recorded.
	closed()
	d := newDev(h, "count", agent.APINative)
	throughTap(d, tap, &skew)
	d.fault = &slotfile.FaultDisk{Inner: d.disk}
	fd, mark := d.fault, 0
	d.progressHook = func(p agent.Progress) {
		if p.State == agent.StateDeferred && mark == 0 {
			mark = fd.Ops()
		}
	}
	if err := deferredCheck(d); !errors.Is(err, agent.ErrInstallDeferred) {
		t.Fatalf("clean run: %v", err)
	}
	total := fd.Ops()
	if mark == 0 {
		t.Fatal("no deferral seen")
	}

	n := 0
	for _, mode := range []slotfile.CutMode{slotfile.CutBefore, slotfile.CutAfter, slotfile.CutTorn} {
		for cut := 1; cut <= total; cut++ {
			n++
			closed()
			d := newDev(h, fmt.Sprintf("d%d", n), agent.APINative)
			throughTap(d, tap, &skew)
			d.fault = &slotfile.FaultDisk{Inner: d.disk, CutAt: cut, Mode: mode}
			lastChunk := -1
			d.progressHook = func(p agent.Progress) {
				if p.State == agent.StateDownloading {
					lastChunk = p.Chunk
				}
			}
			deferredCheck(d)
			where := fmt.Sprintf("cut %d of %d %s", cut, total, mode)
			if !d.fault.Dead() {
				t.Fatalf("%s: the power was not cut", where)
			}
			recorded := cut > mark || cut == mark && mode == slotfile.CutAfter

			// Power comes back, the window still closed.
			resumedAt := -1
			d.progressHook = func(p agent.Progress) {
				if p.State == agent.StateDownloading && resumedAt < 0 {
					resumedAt = p.Chunk
				}
			}
			d.fault = nil
			before := tap.ChunkRequests()
			if err := deferredCheck(d); !errors.Is(err, agent.ErrInstallDeferred) {
				t.Fatalf("%s: first check after the cut: %v", where, err)
			}
			switch {
			case recorded && (resumedAt >= 0 || tap.ChunkRequests() != before):
				t.Fatalf("%s: downloaded again (from chunk %d) after the verified download was recorded", where, resumedAt)
			case resumedAt >= 0 && lastChunk > 0 && lastChunk-resumedAt > 8:
				t.Fatalf("%s: re-downloaded from chunk %d, had %d; at most 8 allowed", where, resumedAt, lastChunk)
			}

			// Another reboot while waiting, then the window opens: not a chunk more.
			before = tap.ChunkRequests()
			if err := deferredCheck(d); !errors.Is(err, agent.ErrInstallDeferred) {
				t.Fatalf("%s: second check after the cut: %v", where, err)
			}
			d.progressHook = nil
			tap.SetWindow(time.Now().Add(-time.Minute), time.Time{})
			d.settle(t, images)
			if n := tap.ChunkRequests() - before; n != 0 {
				t.Fatalf("%s: %d chunk requests after the download was verified and recorded", where, n)
			}
			evs := h.events(d.id)
			if d.running() != "1.0.4" || countOf(evs, "confirmed 1.0.4") != 1 {
				t.Fatalf("%s: running %s; server events %v", where, d.running(), evs)
			}
		}
	}
	t.Logf("%d cuts (%d operations x 3 modes; the verified download recorded at operation %d)", n, total, mark)
}

// An image kept for its window is hashed again before it is marked: one
// damaged while it waited is not installed but reported failed, and the
// next check downloads the release again, in a new session.
func TestDeferredImageDamagedWhileWaiting(t *testing.T) {
	h := newHarness(t)
	h.publish("1.0.4", firmware.Healthy, 20<<10)
	tap := h.Tap()
	var skew atomic.Int64
	d := newDev(h, "dev1", agent.APINative)
	throughTap(d, tap, &skew)
	tap.SetWindow(time.Now().Add(time.Hour), time.Time{})
	if err := d.powerOn(); err != nil {
		t.Fatal(err)
	}
	first, err := d.agent.CheckOnce(t_ctx)
	if !errors.Is(err, agent.ErrInstallDeferred) {
		t.Fatalf("check outside the window: %v", err)
	}
	slot := filepath.Join(d.dir, "slot1.bin")
	img, err := os.ReadFile(slot)
	if err != nil {
		t.Fatal(err)
	}
	img[len(img)/2] ^= 0x01
	if err := os.WriteFile(slot, img, 0o600); err != nil {
		t.Fatal(err)
	}
	tap.SetWindow(time.Now().Add(-time.Minute), time.Time{})
	chunks := tap.ChunkRequests()
	if res, err := d.agent.CheckOnce(t_ctx); err == nil || !strings.Contains(err.Error(), "no longer matches") || res.Updated {
		t.Fatalf("check with the damaged image: %+v %v", res, err)
	}
	if st, _ := d.slots.Status(); st.Slots[1].State != agent.ImageEmpty || tap.ChunkRequests() != chunks {
		t.Fatalf("after the damage was found: slots %+v, %d chunk requests (had %d)", st.Slots, tap.ChunkRequests(), chunks)
	}
	if evs := h.events(d.id); countOf(evs, "failed 1.0.4") != 1 {
		t.Fatalf("server events %v", evs)
	}
	res, err := d.agent.CheckOnce(t_ctx)
	if err != nil || !res.Updated || res.SessionID == first.SessionID || tap.ChunkRequests() == chunks {
		t.Fatalf("next check: %+v %v (first session %s), %d chunk requests", res, err, first.SessionID, tap.ChunkRequests())
	}
	d.settle(t, nil)
	if d.running() != "1.0.4" {
		t.Fatalf("running %s", d.running())
	}
}
