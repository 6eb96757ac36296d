package cclient_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/delta"
	"github.com/ecowatt/fota/internal/attacktest"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/testserver"
)

// Delta updates end to end: the C device (the FOTA_DELTA build) against a
// real server, as agent/delta_test.go does for the Go agent.

const cDeltaImageSize = 64 << 10

// cLineage makes the images of these tests: one product line, 1.0.4
// differing from 1.0.3 in its descriptor and, with scattered set, a byte
// in every `every` past the first 4 KiB (so the patch spans many chunks).
func cLineage(srv *testserver.Server, version string, size, every int, scattered bool) []byte {
	img := srv.SampleLineage(version, firmware.Healthy, size, 0, "c-delta")
	if scattered {
		for i := 4096; i < len(img); i += every {
			img[i] += byte(i/every*37 + 1) // varied, so the patch does not compress to nothing
		}
	}
	return img
}

// installAndBoot powers the device on (which must install 1.0.4), then
// again (it boots 1.0.4 on trial and confirms it), and checks that the new
// slot holds target and the old one still holds base.
func installAndBoot(t *testing.T, d *cdev, base, target []byte) {
	t.Helper()
	if code := d.powerOn(); code != exitReboot {
		t.Fatalf("update: exit %d, want %d:\n%s%s", code, exitReboot, d.stdout, d.stderr)
	}
	if code := d.powerOn(); code != exitIdle {
		t.Fatalf("boot: exit %d:\n%s%s", code, d.stdout, d.stderr)
	}
	b, _ := d.boot()
	if b.version != "1.0.4" || b.slot != 1 {
		t.Fatalf("booted %+v, want 1.0.4 from slot 1", b)
	}
	if !bytes.HasPrefix(d.slot(1), target) {
		t.Fatal("the new slot does not hold the release's image")
	}
	if !bytes.HasPrefix(d.slot(0), base) {
		t.Fatal("the running slot was written")
	}
	if evs := strings.Join(d.srv.Events(d.id), ", "); !strings.Contains(evs, "confirmed 1.0.4") {
		t.Fatalf("the server did not hear the confirm: %s", evs)
	}
}

// TestDeltaUpdateC: a C device running a delta's base downloads the patch
// (a fraction of the image) in each compression, applies it onto its
// running slot, boots and confirms the result; the same device built
// without FOTA_DELTA downloads the full image.
func TestDeltaUpdateC(t *testing.T) {
	for _, compression := range delta.Compressions() {
		t.Run(compression, func(t *testing.T) {
			t.Parallel()
			srv := testserver.New(t)
			base := cLineage(srv, factoryVersion, cDeltaImageSize, 512, false)
			target := cLineage(srv, "1.0.4", cDeltaImageSize, 512, true)
			srv.Publish(srv.BundleWithDeltas("1.0.4", target, 0, 0,
				testserver.DeltaBase{Version: factoryVersion, Image: base, Compression: compression}))

			d := newCDevOn(t, srv, "c-delta", slotSize, 0, base)
			installAndBoot(t, d, base, target)
			if s := srv.Sessions(d.id); len(s) != 1 || s[0].DeltaBase == "" {
				t.Fatalf("sessions %+v: want one delta session", s)
			}

			full := newCDevOn(t, srv, "c-full", slotSize, 0, base)
			full.useFullBuild()
			installAndBoot(t, full, base, target)
			if s := srv.Sessions(full.id); len(s) != 1 || s[0].DeltaBase != "" {
				t.Fatalf("sessions %+v: want one full session", s)
			}

			attacktest.CheckDeltaAndFull(t, srv, compression, cDeltaImageSize)
		})
	}
}

// TestFaultyDeltaFallsBackC: a signed delta that cannot make the
// release's image on the C device is caught before the slot is marked,
// reported failed ("delta patch failed: ..."), and the device installs the
// full image in the same check; the running slot is never written.
func TestFaultyDeltaFallsBackC(t *testing.T) {
	srv0 := testserver.New(t)
	base := cLineage(srv0, factoryVersion, cDeltaImageSize, 512, false)
	target := cLineage(srv0, "1.0.4", cDeltaImageSize, 512, true)
	other := cLineage(srv0, "1.0.2", cDeltaImageSize, 512, true)
	// What the C client says of each, after "delta patch failed: ".
	hash := "the image made does not match the signed sha256"
	reasons := map[string]string{
		"made against another base": hash,
		"writes past the slot":      "makes an image larger than the slot",
		"truncated":                 "delta patch truncated",
		"output fails the hash":     hash,
	}
	cases := attacktest.FaultyDeltas(t, base, target, other, slotSize)
	for i, c := range cases {
		reason := reasons[c.Name]
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			srv := testserver.New(t)
			srv.Publish(srv.BundleWithDeltas("1.0.4", target, 0, 0, testserver.DeltaBase{Version: factoryVersion, Image: base, Patch: c.Patch}))
			d := newCDevOn(t, srv, fmt.Sprintf("faulty-%d", i), slotSize, 0, base)
			installAndBoot(t, d, base, target)
			s := srv.Sessions(d.id)
			if len(s) != 2 || s[0].DeltaBase == "" || s[0].State != fota.SessionFailed ||
				!strings.Contains(s[0].Reason, "delta patch failed: ") || !strings.Contains(s[0].Reason, reason) ||
				s[1].DeltaBase != "" {
				var got []string
				for _, x := range s {
					got = append(got, fmt.Sprintf("{delta %t %s %q}", x.DeltaBase != "", x.State, x.Reason))
				}
				t.Fatalf("sessions %v: want a failed delta (%q) then a full image", got, reason)
			}
		})
	}
}

// TestDeltaPowerCutC cuts power at several points of a delta install,
// mid-patch, in each mode: every time the next power-on resumes the patch
// from its checkpoint and the device ends on the release by the delta,
// never falling back to the full image.
func TestDeltaPowerCutC(t *testing.T) {
	srv := testserver.New(t)
	base := cLineage(srv, factoryVersion, 128<<10, 32, false)
	target := cLineage(srv, "1.0.4", 128<<10, 32, true)
	srv.Publish(srv.BundleWithDeltas("1.0.4", target, 256, 0, testserver.DeltaBase{Version: factoryVersion, Image: base}))
	extra := []string{"--checkpoint-every", "2", "--chunks-per-request", "4", "-v"}

	// An uninterrupted install, to know how many persistent operations it takes.
	ref := newCDevOn(t, srv, "cut-ref", slotSize, 0, base)
	ref.extra = extra
	if code := ref.powerOn(); code != exitReboot {
		t.Fatalf("reference install: exit %d:\n%s%s", code, ref.stdout, ref.stderr)
	}
	ops := ref.ops()
	s := srv.Sessions(ref.id)
	if len(s) != 1 || s[0].DeltaBase == "" || s[0].TotalChunks < 12 {
		for _, x := range s {
			t.Logf("session: delta %t, %d chunks", x.DeltaBase != "", x.TotalChunks)
		}
		t.Fatalf("reference: %d sessions, want one delta of 12 chunks or more", len(s))
	}
	modes := []string{"before", "after", "torn"}
	const cuts = 6
	var mu sync.Mutex
	resumed := 0
	t.Run("cuts", func(t *testing.T) {
		for k := 1; k <= cuts; k++ {
			at := ops * k / (cuts + 1)
			mode := modes[k%len(modes)]
			t.Run(fmt.Sprintf("op%d-%s", at, mode), func(t *testing.T) {
				t.Parallel()
				d := newCDevOn(t, srv, fmt.Sprintf("cut-%d", k), slotSize, 0, base)
				d.extra = extra
				if code := d.powerOn("--cut-at", strconv.Itoa(at), "--cut-mode", mode); code != exitPowerCut {
					t.Fatalf("cut at op %d: exit %d:\n%s%s", at, code, d.stdout, d.stderr)
				}
				code := d.powerOn()
				if strings.Contains(d.stderr, "resuming 1.0.4 at chunk") {
					mu.Lock()
					resumed++
					mu.Unlock()
				}
				if code != exitReboot {
					t.Fatalf("after the cut at op %d: exit %d:\n%s%s", at, code, d.stdout, d.stderr)
				}
				d.settle(map[string][]byte{"1.0.4": target, factoryVersion: base})
				if b, _ := d.boot(); b.version != "1.0.4" || !bytes.HasPrefix(d.slot(b.slot), target) {
					t.Fatalf("ended on %+v", b)
				}
				if !bytes.HasPrefix(d.slot(0), base) {
					t.Fatal("the running slot was written")
				}
				for _, x := range srv.Sessions(d.id) {
					if x.DeltaBase == "" || x.State == fota.SessionFailed {
						t.Fatalf("a session that is not a good delta: %s %q", x.State, x.Reason)
					}
				}
			})
		}
	})
	if tr := srv.Traffic(); tr.FullSessions != 0 {
		t.Fatalf("traffic %+v: a device fell back to the full image", tr)
	}
	// The first cuts may come before the first checkpoint; most are after it.
	if resumed < cuts/2 {
		t.Fatalf("%d of %d power-ons after a cut resumed the patch", resumed, cuts)
	}
	t.Logf("%d persistent operations per install, %d chunks; %d of %d cuts resumed mid-patch", ops, s[0].TotalChunks, resumed, cuts)
}

// TestDeltaOfferAttacksC: the man-in-the-middle offers of
// attacktest.DeltaAttacks (the Go agent's TestDeltaOfferAttacks runs them
// too) against the C device: a delta for another base, a
// delta manifest offered as the full image, the full manifest offered as a
// delta. Each is a delta failure, never an install; the honest answer
// after it installs the release's full image in the same check.
func TestDeltaOfferAttacksC(t *testing.T) {
	cases := attacktest.DeltaAttacks()
	for i, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			srv := testserver.New(t)
			base := cLineage(srv, factoryVersion, cDeltaImageSize, 512, false)
			target := cLineage(srv, "1.0.4", cDeltaImageSize, 512, true)
			otherBase := cLineage(srv, "1.0.2", cDeltaImageSize, 512, true)
			b := srv.BundleWithDeltas("1.0.4", target, 0, 0, testserver.DeltaBase{Version: factoryVersion, Image: base},
				testserver.DeltaBase{Version: "1.0.2", Image: otherBase})
			srv.Publish(b)
			env, deltas, err := attacktest.DeltaEnvelopes(b, 2)
			if err != nil {
				t.Fatal(err)
			}

			m := attacktest.NewMITM(t, srv.URL)
			offer := attacktest.EditFirstOffer(func(a map[string]any) { c.Edit(a, env, deltas) })
			m.Check = offer.Check
			m.Settle()
			d := newCDevOn(t, srv, fmt.Sprintf("mitm-%d", i), slotSize, 0, base)
			d.server = m.URL
			if c.NoDelta {
				d.useFullBuild()
			}
			if code := d.powerOn(); code != exitReboot {
				t.Fatalf("exit %d, want the full image installed after the attack:\n%s%s", code, d.stdout, d.stderr)
			}
			first := strings.Index(d.stderr, "update failed: ")
			if !offer.Attacked() {
				t.Fatal("the check answer was not attacked")
			}
			switch {
			case c.Want == "" && first >= 0:
				t.Fatalf("want no failure:\n%s", d.stderr)
			case c.Want == "":
			case first < 0 || !strings.HasPrefix(d.stderr[first:], "update failed: delta patch failed: ") ||
				!strings.Contains(strings.SplitN(d.stderr[first:], "\n", 2)[0], c.Want):
				t.Fatalf("want the first failure to say %q:\n%s", c.Want, d.stderr)
			case !strings.Contains(d.stderr, "checking again for the full image"):
				t.Fatalf("no second check:\n%s", d.stderr)
			}
			if code := d.powerOn(); code != exitIdle {
				t.Fatalf("boot: exit %d:\n%s%s", code, d.stdout, d.stderr)
			}
			if b, _ := d.boot(); b.version != "1.0.4" || !bytes.HasPrefix(d.slot(b.slot), target) || !bytes.HasPrefix(d.slot(0), base) {
				t.Fatalf("booted %+v: want the release's image, the old slot intact", b)
			}
			// Nothing counted against the release or the rollout.
			if ro, err := srv.Admin.Rollout(context.Background(), 1); err != nil || ro.Counts.Failed != 0 {
				t.Fatalf("rollout counts %+v (%v): the attack counted as a failure", ro.Counts, err)
			}
		})
	}
}

// TestDeltaManifestRefusedWithoutDelta: a build without FOTA_DELTA never
// asks for a delta, and a delta offered to it anyway (a man in the middle
// replaying a signed delta manifest) is a malformed manifest to it: its
// fields are unknown there. Nothing is installed or reported, and the
// honest answer after it installs the full image.
func TestDeltaManifestRefusedWithoutDelta(t *testing.T) {
	srv := testserver.New(t)
	base := cLineage(srv, factoryVersion, cDeltaImageSize, 512, false)
	target := cLineage(srv, "1.0.4", cDeltaImageSize, 512, true)
	b := srv.BundleWithDeltas("1.0.4", target, 0, 0, testserver.DeltaBase{Version: factoryVersion, Image: base})
	srv.Publish(b)
	_, deltas, err := attacktest.DeltaEnvelopes(b, 1)
	if err != nil {
		t.Fatal(err)
	}
	dm, _ := deltas[0].Unverified()
	m := attacktest.NewMITM(t, srv.URL)
	var mu sync.Mutex
	var asked []string
	attacked := false
	m.Check = func(orig []byte) []byte {
		mu.Lock()
		defer mu.Unlock()
		var a map[string]any
		json.Unmarshal(orig, &a)
		asked = append(asked, fmt.Sprint(a["artifact"]))
		if a["update"] != true || attacked {
			return orig
		}
		attacked = true
		a["artifact"] = "delta"
		a["manifest"], a["signature"] = base64.StdEncoding.EncodeToString(deltas[0].ManifestBytes), base64.StdEncoding.EncodeToString(deltas[0].Signature)
		a["chunks"], a["ciphertext_size"] = dm.Chunks(), dm.CiphertextSize
		out, _ := json.Marshal(a)
		return out
	}
	m.Settle()
	d := newCDevOn(t, srv, "c-full", slotSize, 0, base)
	d.useFullBuild()
	d.server = m.URL
	if code := d.powerOn(); code != exitError || d.errorCode() != "FOTA_ERR_MANIFEST" {
		t.Fatalf("exit %d %s, want FOTA_ERR_MANIFEST:\n%s%s", code, d.errorCode(), d.stdout, d.stderr)
	}
	if evs := strings.Join(srv.Events(d.id), ", "); strings.Contains(evs, "failed") || strings.Contains(evs, "applied") {
		t.Fatalf("the server heard of the refused offer: %s", evs)
	}
	installAndBoot(t, d, base, target)
	mu.Lock()
	defer mu.Unlock()
	if !attacked || slices.Contains(asked, "delta") {
		t.Fatalf("the server offered a delta to a device that did not ask (answers' artifacts %v)", asked)
	}
}
