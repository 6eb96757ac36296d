package agent_test

import (
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/agent/slotfile"
	"github.com/ecowatt/fota/internal/firmware"
)

// -sweep=full runs the power-cut sweep on a 256 KiB image (every one of
// its ~500 persistent operations, every mode) and 200 chained-cut runs; the
// default is a 12 KiB image and 20 runs, which finishes in seconds.
var sweepMode = flag.String("sweep", "quick", "power-cut sweep size: quick or full")

func sweepSize() (imageSize, chainedRuns int) {
	if *sweepMode == "full" {
		return 256 << 10, 200
	}
	return 12 << 10, 20
}

// sweepStats collects the figures docs/RELIABILITY.md reports.
type sweepStats struct {
	cuts, bricks, worstRedownload int
	counterCuts                   int // cuts at an operation on the security counter's record
}

// known is the set of image digests a boot may run: the factory image and
// the published one. Anything else booting would be a brick in disguise.
type known map[[32]byte]string

// settle runs boot cycles without further cuts until the device runs a
// valid image and has nothing to install, checking at every boot that it
// booted a known image, and that the security counter is readable, never
// went below what the device held before the cut, and never rose before a
// confirm.
func (d *device) settle(t *testing.T, images known) (first agent.BootInfo) {
	t.Helper()
	d.fault = nil
	lastCounter := uint32(0)
	if d.slots != nil {
		// What the last powered-on session held: a raise the cut
		// interrupted is not in it, a completed one is.
		lastCounter, _ = d.slots.SecurityCounter()
	}
	for i := 0; i < 10; i++ {
		res, err := d.cycle()
		if errors.Is(err, agent.ErrNoBootable) {
			t.Fatalf("bricked: %v", err)
		}
		// A cut can lose the device's rollback report after the server heard
		// its confirm: the server then offers the release again, and the
		// device, which rolled back from it, refuses it (and says so, so it
		// is not offered again). That is the device doing right.
		if err != nil && !agent.IsRefusal(err) {
			t.Fatalf("cycle %d: %v (server events: %v)", i, err, d.h.events(d.id))
		}
		if i == 0 {
			first = d.boot
		}
		img := make([]byte, d.boot.Image.Size)
		d.slots.ReadAt(d.boot.Slot, img, 0)
		if v, ok := images[sha256.Sum256(img)]; images != nil && (!ok || v != d.boot.Image.Version) {
			t.Fatalf("boot %d ran an image that is not a signed release (%s)", i, d.boot.Image.Version)
		}
		st, _ := d.slots.Status()
		counter, err := d.slots.SecurityCounter()
		if err != nil {
			t.Fatalf("boot %d: %v", i, err)
		}
		if counter < lastCounter {
			t.Fatalf("security counter went down: %d -> %d", lastCounter, counter)
		}
		lastCounter = counter
		confirmed := st.Slots[0].State == agent.ImageValid && st.Slots[0].Image.Version == "1.0.4" ||
			st.Slots[1].State == agent.ImageValid && st.Slots[1].Image.Version == "1.0.4"
		// The counter's record only rises, like an eFuse: a cut that
		// corrupts the newest boot state after a confirm takes the device
		// back to its old image (and may take the confirm report with it),
		// and the counter stays raised. It may only have risen once 1.0.4,
		// the one release with counter 1, was in a slot.
		held := st.Slots[0].Image.Version == "1.0.4" || st.Slots[1].Image.Version == "1.0.4"
		if counter > 0 && !confirmed && !held {
			t.Fatalf("security counter rose to %d before a confirm (slots %+v, server %v)", counter, st.Slots, d.h.events(d.id))
		}
		if !d.boot.Trial && !res.Updated {
			return first
		}
	}
	t.Fatal("device did not settle in 10 boots")
	return first
}

// phase is one power-on of the update: A installs, B boots the new image.
type phase func(d *device) error

var phaseInstall phase = func(d *device) error {
	if err := d.powerOn(); err != nil {
		return err
	}
	_, err := d.agent.CheckOnce(t_ctx)
	return err
}

var phaseFirstBoot phase = func(d *device) error {
	if err := d.powerOn(); err != nil {
		return err
	}
	return d.selfTest()
}

// countOps runs the phases cleanly and returns each one's persistent
// operation count, and the op index at which each progress state began.
func countOps(t *testing.T, h *harness, behaviour firmware.Behaviour) ([]int, map[string]int) {
	d := newDev(h, "count-"+string(behaviour), agent.APINative)
	marks := map[string]int{}
	var counts []int
	for i, ph := range []phase{phaseInstall, phaseFirstBoot} {
		d.fault = &slotfile.FaultDisk{Inner: d.disk}
		fd := d.fault
		d.progressHook = func(p agent.Progress) {
			key := fmt.Sprintf("%d:%s", i, p.State)
			if p.State == agent.StateDownloading && p.Chunk > 0 && p.Chunk == p.Chunks/2 {
				key = fmt.Sprintf("%d:half", i)
			}
			if _, ok := marks[key]; !ok {
				marks[key] = fd.Ops()
			}
		}
		if err := ph(d); err != nil {
			t.Fatal(err)
		}
		d.progressHook = nil
		counts = append(counts, fd.Ops())
		// The first operation on each copy of the counter record (the
		// truncate of its temporary file), numbered from 1 as CutAt is, and
		// the end of the record's write (the directory sync after the
		// last rename).
		for j, op := range fd.Log {
			for c := range 2 {
				key := fmt.Sprintf("%d:counter.%d", i, c)
				if _, ok := marks[key]; !ok && strings.Contains(op, fmt.Sprintf("security_counter.%d", c)) {
					marks[key] = j + 1
				}
			}
			if strings.Contains(op, "security_counter.1") {
				marks[fmt.Sprintf("%d:counter.end", i)] = j + 2
			}
		}
	}
	return counts, marks
}

// cutCorrupt is a sweep mode beyond FaultDisk's: the operation completes,
// then the newest boot-state copy's content is damaged in place while its
// stored checksum stays the old one, as failing flash would do.
const cutCorrupt = slotfile.CutMode(99)

func modeName(m slotfile.CutMode) string {
	if m == cutCorrupt {
		return "corrupt-state"
	}
	return m.String()
}

// corruptNewestState flips a byte inside the body of the boot-state copy
// with the highest sequence number.
func corruptNewestState(t *testing.T, dir string) {
	best, bestSeq := "", -1
	for i := range 2 {
		p := filepath.Join(dir, fmt.Sprintf("otadata.%d", i))
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var seq int
		fmt.Sscanf(string(data), `{"seq":%d`, &seq)
		if seq > bestSeq {
			best, bestSeq = p, seq
		}
	}
	data, _ := os.ReadFile(best)
	data[len(`{"seq":`)+3] ^= 0x01 // inside the record, before the checksum line
	os.WriteFile(best, data, 0o600)
}

// cutRun runs phase p of a fresh update with power cut at op cut, then
// settles the device and checks the outcome.
func cutRun(t *testing.T, h *harness, n int, phaseIndex, cut int, mode slotfile.CutMode, want string, images known, stats *sweepStats) agent.BootInfo {
	d := newDev(h, fmt.Sprintf("d%d", n), agent.APINative)
	phases := []phase{phaseInstall, phaseFirstBoot}
	for i := 0; i < phaseIndex; i++ {
		if err := phases[i](d); err != nil {
			t.Fatalf("phase %d before the cut: %v", i, err)
		}
	}
	faultMode := mode
	if mode == cutCorrupt {
		faultMode = slotfile.CutAfter
	}
	d.fault = &slotfile.FaultDisk{Inner: d.disk, CutAt: cut, Mode: faultMode}
	fd := d.fault
	lastChunk := -1
	d.progressHook = func(p agent.Progress) {
		if p.State == agent.StateDownloading {
			lastChunk = p.Chunk
		}
	}
	phases[phaseIndex](d)
	where := fmt.Sprintf("cut %d %s", cut, modeName(mode))
	if len(fd.Log) > 0 {
		where += " at " + fd.Log[len(fd.Log)-1]
	}
	if mode == cutCorrupt {
		corruptNewestState(t, d.dir)
	}
	// Power comes back: the first download progress shows where it resumed.
	resumedAt := -1
	d.progressHook = func(p agent.Progress) {
		if p.State == agent.StateDownloading && resumedAt < 0 {
			resumedAt = p.Chunk
		}
	}
	first := d.settle(t, images)
	d.progressHook = nil
	if stats != nil {
		stats.cuts++
	}
	if d.running() != want {
		t.Fatalf("%s: ended on %s, want %s", where, d.running(), want)
	}
	if c := counterOf(t, d); c != wantCounter[want] {
		t.Fatalf("%s: ended on %s with security counter %d, want %d", where, want, c, wantCounter[want])
	}
	if lastChunk > 0 && resumedAt >= 0 {
		redownload := lastChunk - resumedAt
		// A corrupted state loses its checkpoint legitimately; otherwise at
		// most the chunks since the last checkpoint come again.
		if mode != cutCorrupt && redownload > 8 {
			t.Fatalf("%s: re-downloaded %d chunks (from %d, had %d); at most 8 allowed", where, redownload, resumedAt, lastChunk)
		}
		if stats != nil && mode != cutCorrupt && redownload > stats.worstRedownload {
			stats.worstRedownload = redownload
		}
	}
	evs := strings.Join(h.events(d.id), ", ")
	switch want {
	case "1.0.4":
		if !strings.Contains(evs, "confirmed 1.0.4") {
			t.Fatalf("%s: server never heard the confirm: %s", where, evs)
		}
	default:
		if !strings.Contains(evs, "rolled-back 1.0.4") {
			t.Fatalf("%s: server never heard the rollback: %s", where, evs)
		}
	}
	return first
}

// wantCounter is the security counter a device must end with: 1.0.4's
// once it is confirmed, the factory image's when it rolled back.
var wantCounter = map[string]uint32{"1.0.4": 1, "1.0.3": 0}

// imagesOf returns the digests a device may legitimately boot.
func imagesOf(h *harness, size int, b firmware.Behaviour) known {
	factory, _ := firmware.Sample(firmware.SampleOptions{Version: "1.0.3"})
	return known{sha256.Sum256(factory): "1.0.3", sha256.Sum256(h.Sample("1.0.4", b, size, 1)): "1.0.4"}
}

func publishCounted(h *harness, b firmware.Behaviour, size int) {
	h.Publish(h.Bundle("1.0.4", h.Sample("1.0.4", b, size, 1), 0, 1))
}

// TestNamedPowerCutPoints: the state chain after a cut at each named point.
func TestNamedPowerCutPoints(t *testing.T) {
	h := newHarness(t)
	publishCounted(h, firmware.Healthy, 64<<10)
	images := imagesOf(h, 64<<10, firmware.Healthy)
	counts, marks := countOps(t, h, firmware.Healthy)
	// Each row: where power goes, and what the next boot must run (the
	// state chain then continues to a confirmed 1.0.4, checked by cutRun).
	points := []struct {
		name      string
		phase     int
		cut       int
		mode      slotfile.CutMode
		nextBoot  string
		nextTrial bool
	}{
		{"during download", 0, marks["0:half"], slotfile.CutTorn, "1.0.3", false},
		{"after the last chunk", 0, marks["0:verifying"] + 1, slotfile.CutBefore, "1.0.3", false},
		{"after marking pending", 0, marks["0:completed"], slotfile.CutAfter, "1.0.4", true},
		{"during the first boot", 1, 1, slotfile.CutTorn, "1.0.4", true},
		{"during self-test", 1, marks["1:applying"] + 1, slotfile.CutBefore, "1.0.4", true},
		{"after confirm, before the counter is stored", 1, marks["1:counter.0"], slotfile.CutBefore, "1.0.4", false},
		{"during the counter write (torn)", 1, marks["1:counter.0"] + 1, slotfile.CutTorn, "1.0.4", false},
		{"between the two counter copies", 1, marks["1:counter.1"], slotfile.CutBefore, "1.0.4", false},
		{"after confirm", 1, counts[1], slotfile.CutAfter, "1.0.4", false},
	}
	for i, p := range points {
		t.Run(p.name, func(t *testing.T) {
			if p.cut <= 0 {
				t.Fatalf("no operation found for %q", p.name)
			}
			first := cutRun(t, h, i, p.phase, p.cut, p.mode, "1.0.4", images, nil)
			if first.Image.Version != p.nextBoot || first.Trial != p.nextTrial {
				t.Fatalf("boot after the cut ran %s (trial %v), want %s (trial %v)", first.Image.Version, first.Trial, p.nextBoot, p.nextTrial)
			}
		})
	}
}

var sweepModes = []slotfile.CutMode{slotfile.CutBefore, slotfile.CutAfter, slotfile.CutTorn, cutCorrupt}

// TestPowerCutSweep cuts at every persistent operation of both phases, in
// every mode, for a healthy image and one that fails its self-test.
func TestPowerCutSweep(t *testing.T) {
	size, _ := sweepSize()
	start := time.Now()
	for _, b := range []firmware.Behaviour{firmware.Healthy, firmware.FailSelfTest} {
		h := newHarness(t)
		publishCounted(h, b, size)
		images := imagesOf(h, size, b)
		counts, marks := countOps(t, h, b)
		want := "1.0.4"
		if b == firmware.FailSelfTest {
			want = "1.0.3"
		}
		stats := &sweepStats{}
		n := 0
		for phaseIndex, total := range counts {
			if *sweepMode != "full" && b == firmware.FailSelfTest && phaseIndex == 0 {
				continue // the install phase is the healthy image's; quick runs sweep it once
			}
			for _, mode := range sweepModes {
				for cut := 1; cut <= total; cut++ {
					n++
					cutRun(t, h, n, phaseIndex, cut, mode, want, images, stats)
					if from, ok := marks[fmt.Sprintf("%d:counter.0", phaseIndex)]; ok && cut >= from && cut <= marks[fmt.Sprintf("%d:counter.end", phaseIndex)] {
						stats.counterCuts++
					}
				}
			}
		}
		t.Logf("%s image of %d KiB: %d cut points (%d install + %d first-boot operations x %d modes, %d of them on the security counter's record), %d bricks, no counter lowered (checked at every boot), worst re-download %d chunks",
			b, size>>10, stats.cuts, counts[0], counts[1], len(sweepModes), stats.counterCuts, stats.bricks, stats.worstRedownload)
	}
	t.Logf("sweep took %s", time.Since(start).Round(time.Second))
}

// TestChainedPowerCuts cuts power three times at random operations of one
// update (seed logged), then lets it finish.
func TestChainedPowerCuts(t *testing.T) {
	size, runs := sweepSize()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FOTA_CUT_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (rerun with FOTA_CUT_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	for _, b := range []firmware.Behaviour{firmware.Healthy, firmware.FailSelfTest} {
		h := newHarness(t)
		publishCounted(h, b, size)
		images := imagesOf(h, size, b)
		counts, _ := countOps(t, h, b)
		total := counts[0] + counts[1]
		want := map[firmware.Behaviour]string{firmware.Healthy: "1.0.4", firmware.FailSelfTest: "1.0.3"}[b]
		outOfBoots := 0
		for run := 0; run < runs; run++ {
			d := newDev(h, fmt.Sprintf("chain-%d", run), agent.APINative)
			var cuts []string
			for c := 0; c < 3; c++ {
				mode := sweepModes[rng.IntN(len(sweepModes))]
				at := 1 + rng.IntN(total)
				fm := mode
				if mode == cutCorrupt {
					fm = slotfile.CutAfter
				}
				d.fault = &slotfile.FaultDisk{Inner: d.disk, CutAt: at, Mode: fm}
				// Run boots until this cut fires (or the update is over).
				for i := 0; i < 8 && !d.fault.Dead(); i++ {
					res, err := d.cycle()
					if err == nil && !d.boot.Trial && !res.Updated {
						break
					}
				}
				if mode == cutCorrupt && d.fault.Dead() {
					corruptNewestState(t, d.dir)
				}
				cuts = append(cuts, fmt.Sprintf("%s@%d", modeName(mode), at))
			}
			d.settle(t, images)
			evs := strings.Join(h.events(d.id), ", ")
			// A confirmed 1.0.4 whose boot state a corrupting cut took back
			// leaves the device on 1.0.3 with the counter 1.0.4 raised: the
			// record never goes down.
			lostConfirm := d.running() == "1.0.3" && d.rolledBackUnconfirmed() && counterOf(t, d) == wantCounter["1.0.4"]
			if c := counterOf(t, d); c != wantCounter[d.running()] && !lostConfirm {
				t.Fatalf("%s run %d (cuts %v): ended on %s with security counter %d, want %d", b, run, cuts, d.running(), c, wantCounter[d.running()])
			}
			if d.running() != want {
				// Every trial boot of a healthy image can be cut before it
				// confirms itself; the boot step then rolls back, as it must
				// for an image that never confirms. That, and only that, may
				// end a healthy run on the old version.
				if b != firmware.Healthy || !(lostConfirm || strings.Contains(evs, "rolled-back 1.0.4")) || !d.rolledBackUnconfirmed() {
					t.Fatalf("%s run %d (cuts %v): ended on %s, want %s; server: %s", b, run, cuts, d.running(), want, evs)
				}
				outOfBoots++
			}
			if dv, err := h.admin.Device(t_ctx, d.id); err != nil || dv.Device.Version != d.running() {
				t.Fatalf("%s run %d (cuts %v): the server thinks the device runs %s, it runs %s", b, run, cuts, dv.Device.Version, d.running())
			}
		}
		t.Logf("%s: %d runs of 3 chained cuts, 0 bricks, %d healthy runs rolled back because every trial boot was cut", b, runs, outOfBoots)
	}
}

// rolledBackUnconfirmed reports whether the device's boot state shows the
// new image rejected for not confirming within its trial boots.
func (d *device) rolledBackUnconfirmed() bool {
	st, _ := d.slots.Status()
	for _, sl := range st.Slots {
		if sl.Image.Version == "1.0.4" && sl.State == agent.ImageInvalid {
			return true
		}
	}
	return false
}

// TestUnfinishedConfirmIsNotReported: the confirm report is queued before
// the confirm, so a cut between them must not let the server believe a
// confirm that never happened. Power is cut right after the queueing on
// every trial boot until the boot step rolls back; the server must hear
// the rollback, not a confirm.
func TestUnfinishedConfirmIsNotReported(t *testing.T) {
	h := newHarness(t)
	publishCounted(h, firmware.Healthy, 12<<10)
	d := newDev(h, "dev1", agent.APINative)
	if err := phaseInstall(d); err != nil {
		t.Fatal(err)
	}
	for boot := 1; boot <= 3; boot++ {
		d.fault = &slotfile.FaultDisk{Inner: d.disk}
		if err := d.powerOn(); err != nil {
			t.Fatal(err)
		}
		if !d.boot.Trial {
			t.Fatalf("boot %d is not a trial boot", boot)
		}
		// Confirm = queue the report (5 operations; none once it is queued),
		// then mark the image valid: cut at the marking.
		skip := 1
		if boot == 1 {
			skip = 6
		}
		d.fault.CutAt = d.fault.Ops() + skip
		if err := d.selfTest(); !errors.Is(err, slotfile.ErrPowerCut) {
			t.Fatalf("boot %d: confirm ended with %v, want the cut", boot, err)
		}
	}
	d.settle(t, nil)
	evs := strings.Join(h.events(d.id), ", ")
	if d.running() != "1.0.3" || strings.Contains(evs, "confirmed") || !strings.Contains(evs, "rolled-back 1.0.4") {
		t.Fatalf("running %s; server heard: %s", d.running(), evs)
	}
}
