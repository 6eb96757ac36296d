package agent_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/agent/slotfile"
	"github.com/ecowatt/fota/internal/firmware"
)

// settle runs boot cycles, as a device power-cycled without further cuts,
// until it runs a valid image and has nothing to install. Every boot must
// succeed: a failing boot is a brick.
func (d *device) settle(t *testing.T) (first agent.BootInfo) {
	t.Helper()
	d.fault = nil
	for i := 0; i < 10; i++ {
		res, err := d.cycle()
		if i == 0 {
			first = d.boot
		}
		if errors.Is(err, agent.ErrNoBootable) {
			t.Fatalf("bricked: %v", err)
		}
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
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
	}
	return counts, marks
}

// cutRun runs phase p of a fresh update with power cut at op cut, then
// settles the device and checks the outcome.
func cutRun(t *testing.T, h *harness, n int, phaseIndex, cut int, mode slotfile.CutMode, want string) agent.BootInfo {
	d := newDev(h, fmt.Sprintf("d%d", n), agent.APINative)
	phases := []phase{phaseInstall, phaseFirstBoot}
	for i := 0; i < phaseIndex; i++ {
		if err := phases[i](d); err != nil {
			t.Fatalf("phase %d before the cut: %v", i, err)
		}
	}
	d.fault = &slotfile.FaultDisk{Inner: d.disk, CutAt: cut, Mode: mode}
	fd := d.fault
	lastChunk := -1
	d.progressHook = func(p agent.Progress) {
		if p.State == agent.StateDownloading {
			lastChunk = p.Chunk
		}
	}
	err := phases[phaseIndex](d)
	if fd.Dead() && err == nil {
		// The cut hit a best-effort write (a report queue); the device goes on.
		err = slotfile.ErrPowerCut
	}
	where := fmt.Sprintf("cut %d %s", cut, mode)
	if len(fd.Log) > 0 {
		where += " at " + fd.Log[len(fd.Log)-1]
	}
	// Power comes back: the first download progress shows where it resumed.
	resumedAt := -1
	d.progressHook = func(p agent.Progress) {
		if p.State == agent.StateDownloading && resumedAt < 0 {
			resumedAt = p.Chunk
		}
	}
	first := d.settle(t)
	d.progressHook = nil
	if d.running() != want {
		t.Fatalf("%s: ended on %s, want %s", where, d.running(), want)
	}
	if lastChunk > 0 && resumedAt >= 0 && lastChunk-resumedAt > 8 {
		t.Fatalf("%s: re-downloaded %d chunks (from %d, had %d); at most 8 allowed", where, lastChunk-resumedAt, resumedAt, lastChunk)
	}
	st, _ := d.slots.Status()
	if st.SecurityCounter > 0 && want == "1.0.3" {
		t.Fatalf("%s: security counter rose to %d without a confirm", where, st.SecurityCounter)
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

// TestNamedPowerCutPoints: the state chain after a cut at each named point.
func TestNamedPowerCutPoints(t *testing.T) {
	h := newHarness(t)
	h.publish("1.0.4", firmware.Healthy, 64<<10)
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
		{"after confirm", 1, counts[1], slotfile.CutAfter, "1.0.4", false},
	}
	for i, p := range points {
		t.Run(p.name, func(t *testing.T) {
			if p.cut <= 0 {
				t.Fatalf("no operation found for %q", p.name)
			}
			first := cutRun(t, h, i, p.phase, p.cut, p.mode, "1.0.4")
			if first.Image.Version != p.nextBoot || first.Trial != p.nextTrial {
				t.Fatalf("boot after the cut ran %s (trial %v), want %s (trial %v)", first.Image.Version, first.Trial, p.nextBoot, p.nextTrial)
			}
		})
	}
}

// TestPowerCutSweep cuts at every persistent operation of both phases, in
// every mode, for a healthy image and one that fails its self-test.
func TestPowerCutSweep(t *testing.T) {
	h := newHarness(t)
	h.publish("1.0.4", firmware.Healthy, 12<<10)
	counts, _ := countOps(t, h, firmware.Healthy)
	n := 0
	for phaseIndex, total := range counts {
		for _, mode := range []slotfile.CutMode{slotfile.CutBefore, slotfile.CutAfter, slotfile.CutTorn} {
			for cut := 1; cut <= total; cut++ {
				n++
				cutRun(t, h, 1000+n, phaseIndex, cut, mode, "1.0.4")
			}
		}
	}
	t.Logf("healthy image: %d cut points tried (%d + %d operations, 3 modes), 0 bricks", n, counts[0], counts[1])

	hf := newHarness(t)
	hf.publish("1.0.4", firmware.FailSelfTest, 12<<10)
	fcounts, _ := countOps(t, hf, firmware.FailSelfTest)
	m := 0
	for _, mode := range []slotfile.CutMode{slotfile.CutBefore, slotfile.CutAfter, slotfile.CutTorn} {
		for cut := 1; cut <= fcounts[1]; cut++ {
			m++
			cutRun(t, hf, 5000+m, 1, cut, mode, "1.0.3")
		}
	}
	t.Logf("failing image: %d cut points tried in its first boot, 0 bricks", m)
}
