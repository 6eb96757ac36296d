package storetest

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/ecowatt/fota"
)

// newDelta returns a delta of r from base n, every field distinct.
func newDelta(r *fota.Release, n int) fota.ReleaseDelta {
	return fota.ReleaseDelta{BaseSHA256: fmt.Sprintf("%064x", 0xba5e00+n), BaseVersion: fmt.Sprintf("1.0.%d", n), BaseSize: 2000 + int64(n),
		Compression: []string{"heatshrink", "crle", "none"}[n%3], PatchSize: 100 + int64(n), CiphertextSize: 112 + int64(n)*16,
		CiphertextSHA256: fmt.Sprintf("%064x", 0xc1900+n), ManifestBytes: []byte(fmt.Sprintf(`{"kind":"delta","base_version":"1.0.%d"}`, n)),
		Signature: []byte{0, byte(n), 0xff, 0}, BlobKey: fmt.Sprintf("delta-%s-%s-%d", r.Hardware, r.Version, n)}
}

func blobInUse(t *testing.T, s fota.Store, key string) bool {
	t.Helper()
	inUse, err := s.BlobInUse(context.Background(), key)
	must(t, err)
	return inUse
}

func sameDeltas(t *testing.T, how string, got *fota.Release, want []fota.ReleaseDelta) {
	t.Helper()
	if len(got.Deltas) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got.Deltas, want) {
		t.Fatalf("%s: release %s reads back with deltas\n%+v\nwant\n%+v", how, got.Version, got.Deltas, want)
	}
}

func testReleaseDeltas(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	plain := NewRelease("esp32", "1.0.3")
	must(t, s.CreateRelease(ctx, plain))
	r := NewRelease("esp32", "1.0.4")
	// Stored in the bundle's order, which is not the bases' order.
	r.Deltas = []fota.ReleaseDelta{newDelta(r, 3), newDelta(r, 1), newDelta(r, 2)}
	must(t, s.CreateRelease(ctx, r))
	other := NewRelease("esp32s3", "1.0.4")
	other.Deltas = []fota.ReleaseDelta{newDelta(other, 1)}
	must(t, s.CreateRelease(ctx, other))

	got, err := s.Release(ctx, r.ID)
	must(t, err)
	sameDeltas(t, "Release", got, r.Deltas)
	if d := got.Delta(newDelta(r, 1).BaseSHA256); d == nil || d.BaseVersion != "1.0.1" || got.Delta(plain.PlaintextSHA256) != nil {
		t.Fatalf("Delta by base: %+v", d)
	}
	got, err = s.ReleaseByVersion(ctx, "esp32", "1.0.4")
	must(t, err)
	sameDeltas(t, "ReleaseByVersion", got, r.Deltas)
	got, err = s.Release(ctx, plain.ID)
	must(t, err)
	sameDeltas(t, "Release without deltas", got, nil)
	for _, hw := range []string{"", "esp32", "esp32s3"} {
		all, err := s.Releases(ctx, hw)
		must(t, err)
		want := map[int64][]fota.ReleaseDelta{plain.ID: nil, r.ID: r.Deltas, other.ID: other.Deltas}
		for _, got := range all {
			sameDeltas(t, fmt.Sprintf("Releases(%q)", hw), got, want[got.ID])
		}
		if n := map[string]int{"": 3, "esp32": 2, "esp32s3": 1}[hw]; len(all) != n {
			t.Fatalf("Releases(%q): %d, want %d", hw, len(all), n)
		}
	}

	// A delta's blob is in use as long as its release is.
	if !blobInUse(t, s, r.Deltas[2].BlobKey) || !blobInUse(t, s, other.Deltas[0].BlobKey) || blobInUse(t, s, "delta-none") {
		t.Fatal("BlobInUse does not count deltas' blobs")
	}
	must(t, s.DeleteRelease(ctx, r.ID))
	for _, d := range r.Deltas {
		if blobInUse(t, s, d.BlobKey) {
			t.Fatalf("delta blob %s in use after its release was deleted", d.BlobKey)
		}
	}
	if !blobInUse(t, s, other.Deltas[0].BlobKey) {
		t.Fatal("deleting one release freed another's delta blob")
	}
	// Its deltas went with it: the same version again starts empty.
	again := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, again))
	got, err = s.Release(ctx, again.ID)
	must(t, err)
	sameDeltas(t, "a release stored again without deltas", got, nil)
}

// testDuplicateDeltaBase: two deltas from one base fail the release, all
// of it.
func testDuplicateDeltaBase(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	dup := newDelta(r, 1)
	dup.BlobKey, dup.BaseVersion = "delta-dup", "1.0.9"
	r.Deltas = []fota.ReleaseDelta{newDelta(r, 1), newDelta(r, 2), dup}
	if err := s.CreateRelease(ctx, r); err == nil {
		t.Fatal("a release with two deltas from one base was stored")
	}
	if _, err := s.ReleaseByVersion(ctx, "esp32", "1.0.4"); fota.ErrorCode(err) != fota.ENOTFOUND {
		t.Fatalf("the refused release reads back: %v", err)
	}
	if all, err := s.Releases(ctx, ""); err != nil || len(all) != 0 {
		t.Fatalf("releases after the refusal: %d, %v", len(all), err)
	}
	for _, key := range []string{r.BlobKey, r.Deltas[0].BlobKey, r.Deltas[1].BlobKey, dup.BlobKey} {
		if blobInUse(t, s, key) {
			t.Fatalf("blob %s in use after the release was refused", key)
		}
	}
	if evs := eventsOf(t, s, fota.EventPublished); len(evs) != 0 {
		t.Fatalf("the refused release was published: %+v", evs)
	}
	// The same release with one delta per base is stored.
	r.Deltas = r.Deltas[:2]
	must(t, s.CreateRelease(ctx, r))
	got, err := s.Release(ctx, r.ID)
	must(t, err)
	sameDeltas(t, "after the refusal", got, r.Deltas)
}

func testDeltaSessions(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	r.Deltas = []fota.ReleaseDelta{newDelta(r, 3)}
	must(t, s.CreateRelease(ctx, r))
	addDevices(t, s, "d1", "d2")
	base := r.Deltas[0].BaseSHA256
	must(t, s.OpenSession(ctx, &fota.Session{ID: "s1", DeviceID: "d1", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative,
		TotalChunks: 1, DeltaBase: base}, fota.SessionCaps{}))
	must(t, s.OpenSession(ctx, &fota.Session{ID: "s2", DeviceID: "d2", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative,
		TotalChunks: 3}, fota.SessionCaps{}))
	check := func(how string, sess *fota.Session, err error) {
		t.Helper()
		must(t, err)
		want, artifact := map[string]string{"s1": base, "s2": ""}[sess.ID], map[string]string{"s1": fota.ArtifactDelta, "s2": fota.ArtifactFull}[sess.ID]
		if sess.DeltaBase != want || sess.Artifact() != artifact {
			t.Fatalf("%s: session %s reads back with delta base %q (%s), want %q (%s)", how, sess.ID, sess.DeltaBase, sess.Artifact(), want, artifact)
		}
	}
	for _, id := range []string{"s1", "s2"} {
		sess, err := s.Session(ctx, id)
		check("Session", sess, err)
	}
	for _, dev := range []string{"d1", "d2"} {
		sess, err := s.ActiveSession(ctx, dev)
		check("ActiveSession", sess, err)
	}
	active, err := s.ActiveSessions(ctx)
	must(t, err)
	if len(active) != 2 {
		t.Fatalf("%d active sessions, want 2", len(active))
	}
	for _, sess := range active {
		check("ActiveSessions", sess, nil)
	}
	// Progress and an outcome keep it.
	must(t, s.RecordProgress(ctx, []fota.Progress{{SessionID: "s1", Next: 1, Bytes: 128}}))
	must(t, s.SetSessionState(ctx, "s1", fota.StateChange{State: fota.SessionDownloaded}))
	sess, err := s.Session(ctx, "s1")
	check("Session after progress", sess, err)
	if sess.BytesServed != 128 || sess.State != fota.SessionDownloaded {
		t.Fatalf("delta session after progress: %+v", sess)
	}
}

func testDeltaFailures(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r, next := NewRelease("esp32", "1.0.4"), NewRelease("esp32", "1.0.5")
	r.Deltas = []fota.ReleaseDelta{newDelta(r, 1), newDelta(r, 2), newDelta(r, 3)}
	next.Deltas = []fota.ReleaseDelta{newDelta(next, 1)}
	must(t, s.CreateRelease(ctx, r))
	must(t, s.CreateRelease(ctx, next))
	addDevices(t, s, "d1", "d2")
	b1, b2, b3 := r.Deltas[0].BaseSHA256, r.Deltas[1].BaseSHA256, r.Deltas[2].BaseSHA256
	ended := func(id, dev string, rel *fota.Release, base, state string) {
		t.Helper()
		must(t, s.OpenSession(ctx, &fota.Session{ID: id, DeviceID: dev, ReleaseID: rel.ID, ReleaseVersion: rel.Version, API: fota.APINative,
			TotalChunks: 2, DeltaBase: base}, fota.SessionCaps{}))
		if state != fota.SessionOpen {
			must(t, s.SetSessionState(ctx, id, fota.StateChange{State: state, Reason: "test"}))
		}
	}
	failures := func(dev string, rel *fota.Release) []string {
		t.Helper()
		got, err := s.DeltaFailures(ctx, dev, rel.ID)
		must(t, err)
		return got
	}
	if got := failures("d1", r); got != nil {
		t.Fatalf("failures before any session: %#v, want nil", got)
	}
	ended("s1", "d1", r, b2, fota.SessionFailed)     // counted
	ended("s2", "d1", r, "", fota.SessionFailed)     // a full image: not a delta's failure
	ended("s3", "d1", r, b3, fota.SessionRolledBack) // the patch applied: not its failure
	ended("s4", "d1", r, b1, fota.SessionFailed)     // counted
	ended("s5", "d1", r, b2, fota.SessionFailed)     // counted again: listed once
	ended("s6", "d2", r, b3, fota.SessionFailed)     // another device
	ended("s7", "d1", next, next.Deltas[0].BaseSHA256, fota.SessionFailed)
	ended("s8", "d1", r, b3, fota.SessionOpen) // still active
	want := []string{b1, b2}
	if got := failures("d1", r); !reflect.DeepEqual(got, want) {
		t.Fatalf("d1's failed deltas of %s: %v, want %v", r.Version, got, want)
	}
	if got := failures("d2", r); !reflect.DeepEqual(got, []string{b3}) {
		t.Fatalf("d2's failed deltas: %v", got)
	}
	if got := failures("d1", next); !reflect.DeepEqual(got, []string{next.Deltas[0].BaseSHA256}) {
		t.Fatalf("d1's failed deltas of %s: %v", next.Version, got)
	}
	if got := failures("d2", next); got != nil {
		t.Fatalf("d2's failed deltas of %s: %v, want nil", next.Version, got)
	}
}

func testTraffic(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	rel, other := NewRelease("esp32", "1.0.4"), NewRelease("esp32", "1.0.5")
	rel.Deltas = []fota.ReleaseDelta{newDelta(rel, 1)}
	other.CiphertextSize = 5008
	other.Deltas = []fota.ReleaseDelta{newDelta(other, 1)}
	must(t, s.CreateRelease(ctx, rel))
	must(t, s.CreateRelease(ctx, other))
	addDevices(t, s, "d1", "d2", "d3", "d4", "d5")
	ro := createRollout(t, s, newRollout(rel, fota.RolloutRunning, 3), inWave(1, "d1", "d2", "d3"), false)
	open := func(id, dev string, r *fota.Release, rollout int64, delta bool, bytes int64) {
		t.Helper()
		sess := &fota.Session{ID: id, DeviceID: dev, ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 4, RolloutID: rollout}
		if delta {
			sess.DeltaBase = r.Deltas[0].BaseSHA256
		}
		must(t, s.OpenSession(ctx, sess, fota.SessionCaps{}))
		// Two batches: bytes add up.
		must(t, s.RecordProgress(ctx, []fota.Progress{{SessionID: id, Next: 1, Bytes: bytes / 2}}))
		must(t, s.RecordProgress(ctx, []fota.Progress{{SessionID: id, Next: 4, Bytes: bytes - bytes/2}}))
	}
	traffic := func(f fota.TrafficFilter) fota.Traffic {
		t.Helper()
		got, err := s.Traffic(ctx, f)
		must(t, err)
		return got
	}
	if got := traffic(fota.TrafficFilter{}); got != (fota.Traffic{}) {
		t.Fatalf("traffic with no sessions: %+v", got)
	}
	open("r1", "d1", rel, ro.ID, true, 300)
	open("r2", "d2", rel, ro.ID, true, 500)
	// A delta half served (still downloading) counts its bytes, but says
	// nothing yet of what deltas save.
	must(t, s.OpenSession(ctx, &fota.Session{ID: "r4", DeviceID: "d3", ReleaseID: rel.ID, ReleaseVersion: rel.Version, API: fota.APINative,
		TotalChunks: 4, RolloutID: ro.ID, DeltaBase: rel.Deltas[0].BaseSHA256}, fota.SessionCaps{}))
	must(t, s.RecordProgress(ctx, []fota.Progress{{SessionID: "r4", Next: 2, Bytes: 100}}))
	open("r3", "d3", rel, ro.ID, false, 3008)
	open("p1", "d4", rel, 0, false, 1000) // a pin of the same release
	open("p2", "d5", other, 0, true, 700)
	must(t, s.SetSessionState(ctx, "p2", fota.StateChange{State: fota.SessionFailed, Reason: "patch failed"}))
	open("p3", "d5", other, 0, false, 5008) // then the full image

	for _, tc := range []struct {
		name string
		f    fota.TrafficFilter
		want fota.Traffic
	}{
		{"rollout", fota.TrafficFilter{RolloutID: ro.ID}, fota.Traffic{FullSessions: 1, FullBytes: 3008, DeltaSessions: 3, DeltaBytes: 900,
			DeltaDone: 2, DeltaDoneBytes: 800, DeltaFullBytes: 2 * 3008}},
		{"release", fota.TrafficFilter{ReleaseID: rel.ID}, fota.Traffic{FullSessions: 2, FullBytes: 4008, DeltaSessions: 3, DeltaBytes: 900,
			DeltaDone: 2, DeltaDoneBytes: 800, DeltaFullBytes: 2 * 3008}},
		{"rollout and release", fota.TrafficFilter{RolloutID: ro.ID, ReleaseID: other.ID}, fota.Traffic{}},
		{"other release", fota.TrafficFilter{ReleaseID: other.ID}, fota.Traffic{FullSessions: 1, FullBytes: 5008, DeltaSessions: 1, DeltaBytes: 700, DeltaFailed: 1}},
		{"all", fota.TrafficFilter{}, fota.Traffic{FullSessions: 3, FullBytes: 9016, DeltaSessions: 4, DeltaBytes: 1600, DeltaFailed: 1,
			DeltaDone: 2, DeltaDoneBytes: 800, DeltaFullBytes: 2 * 3008}},
		{"no such rollout", fota.TrafficFilter{RolloutID: ro.ID + 100}, fota.Traffic{}},
	} {
		if got := traffic(tc.f); got != tc.want {
			t.Fatalf("traffic by %s: %+v, want %+v", tc.name, got, tc.want)
		}
	}

	// A deleted release's sessions still count their bytes (its size is
	// gone with it).
	must(t, s.SetSessionState(ctx, "p3", fota.StateChange{State: fota.SessionFailed, Reason: "test"}))
	must(t, s.DeleteRelease(ctx, other.ID))
	want := fota.Traffic{FullSessions: 3, FullBytes: 9016, DeltaSessions: 4, DeltaBytes: 1600, DeltaFailed: 1,
		DeltaDone: 2, DeltaDoneBytes: 800, DeltaFullBytes: 2 * 3008}
	if got := traffic(fota.TrafficFilter{}); got != want {
		t.Fatalf("traffic after a release was deleted: %+v, want %+v", got, want)
	}
	if got := traffic(fota.TrafficFilter{ReleaseID: other.ID}); got != (fota.Traffic{}) {
		t.Fatalf("traffic of a deleted release: %+v", got)
	}
}

// CheckDeltasAfterUpgrade checks a store opened on a database from before
// delta artifacts: release 1 (esp32 1.0.4, ciphertext 3008 bytes, blob
// "b"), device "old", its sessions "s-open" (open, 100 bytes served) and
// "s-failed" (failed, 200 bytes). They all read as full-image ones, and
// the release takes a delta.
func CheckDeltasAfterUpgrade(t *testing.T, s fota.Store) {
	t.Helper()
	ctx := context.Background()
	r, err := s.Release(ctx, 1)
	must(t, err)
	sameDeltas(t, "upgraded", r, nil)
	for _, id := range []string{"s-open", "s-failed"} {
		sess, err := s.Session(ctx, id)
		must(t, err)
		if sess.DeltaBase != "" || sess.Artifact() != fota.ArtifactFull {
			t.Fatalf("upgraded session %s: delta base %q (%s)", id, sess.DeltaBase, sess.Artifact())
		}
	}
	active, err := s.ActiveSessions(ctx)
	must(t, err)
	if len(active) != 1 || active[0].DeltaBase != "" {
		t.Fatalf("upgraded active sessions: %+v", active)
	}
	if got, err := s.DeltaFailures(ctx, "old", 1); err != nil || got != nil {
		t.Fatalf("upgraded delta failures: %v, %v", got, err)
	}
	want := fota.Traffic{FullSessions: 2, FullBytes: 300}
	if got, err := s.Traffic(ctx, fota.TrafficFilter{ReleaseID: 1}); err != nil || got != want {
		t.Fatalf("upgraded traffic: %+v, %v; want %+v", got, err, want)
	}
	next := NewRelease("esp32", "1.0.5")
	next.Deltas = []fota.ReleaseDelta{newDelta(next, 4)}
	must(t, s.CreateRelease(ctx, next))
	if !blobInUse(t, s, next.Deltas[0].BlobKey) || !blobInUse(t, s, "b") {
		t.Fatal("blobs after the upgrade: a delta's or the old release's not in use")
	}
	got, err := s.ReleaseByVersion(ctx, "esp32", "1.0.5")
	must(t, err)
	sameDeltas(t, "stored after the upgrade", got, next.Deltas)
}
