package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/agent/slotfile"
	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/delta"
	"github.com/ecowatt/fota/internal/attacktest"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/testserver"
)

const deltaImageSize = 64 << 10

// lineage makes the images of the delta tests: one product line, so that
// 1.0.4 differs from 1.0.3 in its descriptor, its marker and, with
// scattered set, a byte in every 512 past the first 4 KiB (code changed
// all over, so the patch spans many chunks).
func lineage(h *harness, version string, b firmware.Behaviour, counter uint32, scattered bool) []byte {
	img := h.SampleLineage(version, b, deltaImageSize, counter, "delta-test")
	if scattered {
		for i := 4096; i < len(img); i += 512 {
			img[i]++
		}
	}
	return img
}

// newDeviceOn is a device whose factory image (1.0.3, running in slot 0)
// is img.
func (h *harness) newDeviceOn(id string, img []byte) *device {
	h.t.Helper()
	psk := h.AddDeviceAPI(id, "1.0.3", agent.APINative)
	dir := h.t.TempDir()
	disk, err := slotfile.NewOSDisk(dir)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { disk.Close() })
	if err := slotfile.Format(disk, slotSize, img, agent.Image{Version: "1.0.3", Size: int64(len(img)), SHA256: sha256.Sum256(img)}); err != nil {
		h.t.Fatal(err)
	}
	return &device{h: h, id: id, api: agent.APINative, psk: psk, disk: disk, size: slotSize, dir: dir}
}

// TestDeltaUpdate: a device running a delta's base downloads the patch
// (a fraction of the image), applies it onto its running image, boots
// and confirms the result; a device with NoDelta downloads the image.
func TestDeltaUpdate(t *testing.T) {
	for _, compression := range delta.Compressions() {
		t.Run(compression, func(t *testing.T) {
			h := newHarness(t)
			base := lineage(h, "1.0.3", firmware.Healthy, 0, false)
			target := lineage(h, "1.0.4", firmware.Healthy, 0, true)
			h.Publish(h.BundleWithDeltas("1.0.4", target, 0, 0, testserver.DeltaBase{Version: "1.0.3", Image: base, Compression: compression}))

			d := h.newDeviceOn("delta-dev", base)
			res, err := d.cycle()
			if err != nil || !res.Updated {
				t.Fatalf("update: %+v %v (events %v)", res, err, h.events(d.id))
			}
			if _, err := d.cycle(); err != nil || d.running() != "1.0.4" {
				t.Fatalf("boot: running %s, %v", d.running(), err)
			}
			got := make([]byte, len(target))
			d.slots.ReadAt(d.boot.Slot, got, 0)
			if !bytes.Equal(got, target) {
				t.Fatal("the slot does not hold the release's image")
			}
			// The running slot was only read: the factory image is intact.
			old := make([]byte, len(base))
			d.slots.ReadAt(agent.Other(d.boot.Slot), old, 0)
			if !bytes.Equal(old, base) {
				t.Fatal("the patch wrote the slot it read from")
			}

			full := h.newDeviceOn("full-dev", base)
			full.configHook = func(c *agent.Config) { c.NoDelta = true }
			if res, err := full.cycle(); err != nil || !res.Updated {
				t.Fatalf("full update: %+v %v", res, err)
			}
			attacktest.CheckDeltaAndFull(t, h.Server, compression, deltaImageSize)
		})
	}
}

// TestFaultyDeltaFallsBack: a signed delta that cannot make the release's
// image on the device (made from another base, claiming a larger image
// than the slot, cut short, or making an image that fails the signed hash)
// is caught before the slot is marked, reported failed, and the device
// installs the full image at once; the running slot is never written, the
// device never boots a bad image, and the rollout does not count the delta
// as a failure.
func TestFaultyDeltaFallsBack(t *testing.T) {
	h := newHarness(t)
	base := lineage(h, "1.0.3", firmware.Healthy, 0, false)
	target := lineage(h, "1.0.4", firmware.Healthy, 0, true)
	other := lineage(h, "1.0.2", firmware.Healthy, 0, true)
	// What the agent says of each, after "delta patch failed: ".
	reasons := map[string]string{
		"made against another base": "does not match the release's signed sha256",
		"output fails the hash":     "does not match the release's signed sha256",
	}
	cases := attacktest.FaultyDeltas(t, base, target, other, slotSize)
	for i, c := range cases {
		reason := reasons[c.Name]
		t.Run(c.Name, func(t *testing.T) {
			h := newHarness(t)
			h.Publish(h.BundleWithDeltas("1.0.4", target, 0, 0, testserver.DeltaBase{Version: "1.0.3", Image: base, Patch: c.Patch}))
			d := h.newDeviceOn(fmt.Sprintf("faulty-%d", i), base)
			res, err := d.cycle()
			if err != nil || !res.Updated {
				t.Fatalf("after the faulty delta the full image should install: %+v %v (events %v)", res, err, h.events(d.id))
			}
			evs := strings.Join(h.events(d.id), ", ")
			if !strings.Contains(evs, "failed 1.0.4") {
				t.Fatalf("the server did not hear the delta fail: %s", evs)
			}
			sessions := h.Sessions(d.id)
			if len(sessions) != 2 || sessions[0].DeltaBase == "" || sessions[0].State != fota.SessionFailed ||
				!strings.Contains(sessions[0].Reason, "delta patch failed: ") || !strings.Contains(sessions[0].Reason, reason) || sessions[1].DeltaBase != "" {
				t.Fatalf("sessions %+v: want a failed delta (%q) then a full image", sessions, reason)
			}
			old := make([]byte, len(base))
			d.slots.ReadAt(d.boot.Slot, old, 0)
			if !bytes.Equal(old, base) {
				t.Fatal("the running slot was written")
			}
			if _, err := d.cycle(); err != nil || d.running() != "1.0.4" {
				t.Fatalf("boot: running %s, %v", d.running(), err)
			}
			if evs := strings.Join(h.events(d.id), ", "); !strings.Contains(evs, "confirmed 1.0.4") {
				t.Fatalf("events: %s", evs)
			}
		})
	}
}

// TestDeltaOfferAttacks: a man in the middle (or a compromised server)
// with validly signed manifests and no key: a delta for another base, a
// delta manifest offered as a full image, and a full manifest offered as a
// delta are all refused before a byte is downloaded, and none of them
// makes the device boot anything but a signed image of the release.
func TestDeltaOfferAttacks(t *testing.T) {
	// setup publishes 1.0.4 with deltas from 1.0.3 (what the device runs)
	// and from 1.0.2, and returns the signed envelopes an attacker could
	// have recorded: the release's and the two deltas'.
	setup := func(h *harness) (base, target []byte, env *bundle.Envelope, deltas []*bundle.Envelope) {
		base = lineage(h, "1.0.3", firmware.Healthy, 0, false)
		target = lineage(h, "1.0.4", firmware.Healthy, 0, true)
		otherBase := lineage(h, "1.0.2", firmware.Healthy, 0, true)
		b := h.BundleWithDeltas("1.0.4", target, 0, 0, testserver.DeltaBase{Version: "1.0.3", Image: base},
			testserver.DeltaBase{Version: "1.0.2", Image: otherBase})
		h.Publish(b)
		env, deltas, err := attacktest.DeltaEnvelopes(b, 2)
		if err != nil {
			t.Fatal(err)
		}
		return base, target, env, deltas
	}
	cases := attacktest.DeltaAttacks()
	for i, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			h := newHarness(t)
			base, target, env, deltas := setup(h)
			m := attacktest.NewMITM(t, h.URL)
			first := attacktest.EditFirstOffer(func(a map[string]any) { c.Edit(a, env, deltas) })
			m.Check = first.Check
			d := h.newDeviceOn(fmt.Sprintf("mitm-%d", i), base)
			d.configHook = func(cfg *agent.Config) { cfg.Server = m.URL; cfg.NoDelta = c.NoDelta; cfg.CheckpointEvery = 1 }
			if err := d.powerOn(); err != nil {
				t.Fatal(err)
			}
			var seen []string
			d.progressHook = func(p agent.Progress) {
				if p.Err != nil {
					seen = append(seen, p.Err.Error())
				}
			}
			res, err := d.agent.CheckOnce(context.Background())
			attacked := first.Attacked()
			if c.Want == "" && (!attacked || len(seen) != 0) {
				t.Fatalf("attacked %v, errors %q: want none", attacked, seen)
			}
			if c.Want != "" && (!attacked || len(seen) == 0 || !strings.Contains(seen[0], c.Want)) {
				t.Fatalf("errors %q, want the first to say %q", seen, c.Want)
			}
			// The attack costs the device its delta, not its update: the
			// honest answer after it is installed and boots.
			if err != nil || !res.Updated {
				t.Fatalf("after the refusal: %+v %v", res, err)
			}
			if _, err := d.cycle(); err != nil || d.running() != "1.0.4" {
				t.Fatalf("boot: running %s, %v", d.running(), err)
			}
			img := make([]byte, len(target))
			d.slots.ReadAt(d.boot.Slot, img, 0)
			if !bytes.Equal(img, target) {
				t.Fatal("booted an image that is not the release's")
			}
			// Nothing counted against the release or the rollout.
			ro, err := h.admin.Rollout(context.Background(), 1)
			if err != nil || ro.Counts.Failed != 0 || ro.Counts.Confirmed != 1 {
				t.Fatalf("rollout counts %+v (%v): the attack counted as a failure", ro.Counts, err)
			}
		})
	}
}

// TestPowerCutSweepDelta cuts power at every persistent operation of a
// delta install, in every mode: the device never bricks, never boots
// anything but a signed image, resumes the patch from its last checkpoint
// (the sweep's re-download bound), and ends on the release, every time by
// the delta: a cut never makes the patch fail and fall back.
func TestPowerCutSweepDelta(t *testing.T) {
	size, _ := sweepSize()
	h := newHarness(t)
	base := h.SampleLineage("1.0.3", firmware.Healthy, size, 0, "sweep")
	target := h.SampleLineage("1.0.4", firmware.Healthy, size, 1, "sweep")
	for i := 4096; i < len(target); i += 64 {
		target[i]++
	}
	h.factory = base
	h.Publish(h.BundleWithDeltas("1.0.4", target, 256, 1, testserver.DeltaBase{Version: "1.0.3", Image: base}))
	images := known{sha256.Sum256(base): "1.0.3", sha256.Sum256(target): "1.0.4"}
	counts, _ := countOps(t, h, firmware.Healthy)
	stats := &sweepStats{}
	n := 0
	for _, mode := range sweepModes {
		for cut := 1; cut <= counts[0]; cut++ {
			n++
			cutRun(t, h, n, 0, cut, mode, "1.0.4", images, stats)
		}
	}
	tr := h.Traffic()
	if tr.FullSessions != 0 {
		t.Fatalf("%d sessions fell back to the full image: a cut made a patch fail (traffic %+v)", tr.FullSessions, tr)
	}
	t.Logf("delta of a %d KiB image: %d cut points (%d install operations x %d modes), %d bricks, worst re-download %d chunks; %d delta sessions, %d bytes",
		size>>10, stats.cuts, counts[0], len(sweepModes), stats.bricks, stats.worstRedownload, tr.DeltaSessions, tr.DeltaBytes)
}
