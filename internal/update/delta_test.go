package update_test

import (
	"strings"
	"testing"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/update"
)

// TestDeltaChoiceAndFallback: a native device running exactly a delta's
// base, and able to apply its compression, gets the delta; any other gets
// the full image; a failed delta keeps the device pending (not failed: the
// gate does not count it) and its next check gets the full image; the
// EcoWatt API never gets a delta.
func TestDeltaChoiceAndFallback(t *testing.T) {
	h := newHarness(t, update.Config{})
	baseA, baseB := strings.Repeat("a", 64), strings.Repeat("b", 64)
	rel := h.release("1.0.4", func(r *fota.Release) {
		r.Deltas = []fota.ReleaseDelta{
			{BaseSHA256: baseA, BaseVersion: "1.0.3", BaseSize: 900, Compression: "heatshrink", PatchSize: 90, CiphertextSize: 96,
				CiphertextSHA256: strings.Repeat("1", 64), BlobKey: strings.Repeat("1", 64), ManifestBytes: []byte("{}"), Signature: []byte("s")},
			{BaseSHA256: baseB, BaseVersion: "1.0.2", BaseSize: 800, Compression: "crle", PatchSize: 3000, CiphertextSize: 3008,
				CiphertextSHA256: strings.Repeat("2", 64), BlobKey: strings.Repeat("2", 64), ManifestBytes: []byte("{}"), Signature: []byte("s")},
		}
	})
	for _, id := range []string{"d1", "d2", "d3", "d4", "d5"} {
		h.device(id, fota.APIBoth)
	}
	checkIn := func(id, image string, compressions ...string) *fota.Session {
		t.Helper()
		offer, why, err := h.svc.Check(h.ctx, update.CheckIn{DeviceID: id, API: fota.APINative, Running: "1.0.3",
			ImageSHA256: image, DeltaCompressions: compressions})
		if err != nil || offer == nil {
			t.Fatalf("%s: no offer (%s, %v)", id, why, err)
		}
		return offer.Session
	}
	all := []string{"heatshrink", "crle", "none"}

	// The base it runs, a compression it applies: the delta, with its chunks.
	s1 := checkIn("d1", baseA, all...)
	if s1.DeltaBase != baseA || s1.TotalChunks != rel.Deltas[0].Chunks(rel.ChunkSize) || s1.Artifact() != fota.ArtifactDelta {
		t.Fatalf("d1 session %+v, want the delta from %s", s1, baseA[:8])
	}
	// Another base's delta in another compression.
	s2 := checkIn("d2", baseB, "crle")
	if s2.DeltaBase != baseB {
		t.Fatalf("d2 got %q", s2.DeltaBase)
	}
	// No delta for its image, no image reported, a compression it lacks.
	for id, c := range map[string][2]any{"d3": {strings.Repeat("c", 64), all}, "d4": {"", all}, "d5": {baseB, []string{"heatshrink"}}} {
		if s := checkIn(id, c[0].(string), c[1].([]string)...); s.DeltaBase != "" || s.TotalChunks != rel.Chunks() {
			t.Fatalf("%s: session %+v, want the full image", id, s)
		}
	}
	// A check-in during the session resumes it, delta and all.
	if s := checkIn("d1", baseA, all...); s.ID != s1.ID || s.DeltaBase != baseA {
		t.Fatalf("d1 resumed %+v", s)
	}

	// The delta fails on d1: recorded, d1 stays pending, the next check
	// gets the full image even though it reports the same base.
	if err := h.svc.Report(h.ctx, update.Report{Session: s1, API: fota.APINative, State: fota.SessionFailed,
		Reason: "image sha256 mismatch"}); err != nil {
		t.Fatal(err)
	}
	ended, err := h.store.Session(h.ctx, s1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ended.State != fota.SessionFailed || !strings.Contains(ended.Reason, "delta failed, the full image is offered next") {
		t.Fatalf("failed delta session: %s %q", ended.State, ended.Reason)
	}
	members, err := h.store.RolloutMembers(h.ctx, s1.RolloutID, h.clock.Now().Add(-1e12))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if m.DeviceID == "d1" && m.State != fota.MemberPending {
			t.Fatalf("d1 is %s in the rollout after a failed delta, want pending", m.State)
		}
	}
	s1b := checkIn("d1", baseA, all...)
	if s1b.ID == s1.ID || s1b.DeltaBase != "" || s1b.TotalChunks != rel.Chunks() {
		t.Fatalf("after the failed delta d1 got %+v, want a full-image session", s1b)
	}
	// A failed full image is a failure like any other.
	if err := h.svc.Report(h.ctx, update.Report{Session: s1b, API: fota.APINative, State: fota.SessionFailed, Reason: "flash"}); err != nil {
		t.Fatal(err)
	}
	members, _ = h.store.RolloutMembers(h.ctx, s1.RolloutID, h.clock.Now().Add(-1e12))
	for _, m := range members {
		if m.DeviceID == "d1" && m.State != fota.MemberFailed {
			t.Fatalf("d1 is %s after its full image failed, want failed", m.State)
		}
	}

	// A failure the device says is the delta's, on a full image's session
	// (its answer came with delta fields it never had): not counted.
	sD4 := checkIn("d4", "", all...)
	if err := h.svc.Report(h.ctx, update.Report{Session: sD4, API: fota.APINative, State: fota.SessionFailed,
		Reason: "delta patch failed: artifact", DeltaFailure: true}); err != nil {
		t.Fatal(err)
	}
	members, _ = h.store.RolloutMembers(h.ctx, s1.RolloutID, h.clock.Now().Add(-1e12))
	for _, m := range members {
		if m.DeviceID == "d4" && m.State != fota.MemberPending {
			t.Fatalf("d4 is %s after a delta-grounds failure of a full session, want pending", m.State)
		}
	}
	if s := checkIn("d4", "", all...); s.DeltaBase != "" || s.ID == sD4.ID {
		t.Fatalf("d4 after: %+v", s)
	}

	// The EcoWatt API cannot report what it runs: full image only.
	h.device("e1", fota.APIEcoWatt)
	offer, why, err := h.svc.Check(h.ctx, update.CheckIn{DeviceID: "e1", API: fota.APIEcoWatt, Running: "1.0.3",
		ImageSHA256: baseA, DeltaCompressions: all})
	if err != nil || offer == nil || offer.Session.DeltaBase != "" {
		t.Fatalf("EcoWatt API: %+v %s %v", offer, why, err)
	}

	// What went on the wire, by artifact.
	if err := h.store.RecordProgress(h.ctx, []fota.Progress{{SessionID: s2.ID, Next: 1, Bytes: 1024}}); err != nil {
		t.Fatal(err)
	}
	tr, err := h.store.Traffic(h.ctx, fota.TrafficFilter{ReleaseID: rel.ID})
	if err != nil {
		t.Fatal(err)
	}
	if tr.DeltaSessions != 2 || tr.DeltaBytes != 1024 || tr.DeltaFailed != 1 || tr.DeltaDone != 0 || tr.FullSessions != 6 {
		t.Fatalf("traffic %+v", tr)
	}
}
