// Package storetest is the conformance suite every fota.Store must pass.
// internal/sqlite runs it always; other stores run the same tests.
package storetest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
)

// Clock is a settable time source shared by a store under test.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// Factory makes an empty store that reads time from clock.
type Factory func(t *testing.T, clock *Clock) fota.Store

// Run runs every conformance test against stores from newStore.
func Run(t *testing.T, newStore Factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s fota.Store, c *Clock)
	}{
		{"Releases", testReleases},
		{"DeleteRelease", testDeleteRelease},
		{"Devices", testDevices},
		{"Sessions", testSessions},
		{"SessionCap", testSessionCap},
		{"StaleSessionsAbandoned", testStaleSessions},
		{"SessionCounts", testSessionCounts},
		{"ConcurrentOpens", testConcurrentOpens},
		{"ConfirmRaisesDevice", testConfirm},
		{"ConcurrentProgress", testConcurrentProgress},
		{"APIPolicy", testAPIPolicy},
		{"EcoWattNeverReplacesNative", testEcoWattNeverReplacesNative},
		{"SessionCapPerAPI", testSessionCapPerAPI},
		{"OpenRespectsPolicy", testOpenRespectsPolicy},
		{"RepeatedStateChangesNothing", testRepeatedState},
		{"ScopedTokens", testScopedTokens},
		{"Backoffs", testBackoffs},
		{"TokensAndNonces", testTokensAndNonces},
		{"Events", testEvents},
		{"WithdrawRelease", testWithdrawRelease},
		{"RemoveDevice", testRemoveDevice},
		{"PruneEvents", testPruneEvents},
		{"PruneSessions", testPruneSessions},
		{"PruneRemovedDevices", testPruneRemovedDevices},
		{"Labels", testLabels},
		{"Inventory", testInventory},
		{"CreateRollout", testCreateRollout},
		{"RolloutOverlap", testRolloutOverlap},
		{"OverlapEndedRollouts", testOverlapEndedRollouts},
		{"ConcurrentOverlap", testConcurrentOverlap},
		{"RolloutOpenSession", testRolloutOpenSession},
		{"MemberFollowsSession", testMemberFollowsSession},
		{"RolloutTally", testRolloutTally},
		{"TransitionRollout", testTransitionRollout},
		{"TransitionEndsSessions", testTransitionEndsSessions},
		{"WithdrawAbortsRollouts", testWithdrawAbortsRollouts},
		{"DeleteReleaseOfRollout", testDeleteReleaseOfRollout},
		{"RemoveDeviceFromRollouts", testRemoveDeviceFromRollouts},
		{"JoinRollout", testJoinRollout},
		{"RolloutEvents", testRolloutEvents},
		{"RolloutTrust", testRolloutTrust},
		{"Webhooks", testWebhooks},
		{"WebhookFanOut", testWebhookFanOut},
		{"WebhookFanOutConcurrent", testWebhookFanOutConcurrent},
		{"WebhookClaims", testWebhookClaims},
		{"WebhookClaimsConcurrent", testWebhookClaimsConcurrent},
		{"PruneDeliveries", testPruneDeliveries},
		{"Users", testUsers},
		{"WebSessions", testWebSessions},
		{"PasswordRevokesSessions", testPasswordRevokesSessions},
		{"RemoveUserDeletesSessions", testRemoveUserDeletesSessions},
		{"PruneWebSessions", testPruneWebSessions},
		{"EventFilters", testEventFilters},
		{"ReleaseDeltas", testReleaseDeltas},
		{"DuplicateDeltaBase", testDuplicateDeltaBase},
		{"DeltaSessions", testDeltaSessions},
		{"DeltaFailures", testDeltaFailures},
		{"Traffic", testTraffic},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &Clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
			s := newStore(t, clock)
			t.Cleanup(func() { s.Close() })
			// Before Close (cleanups run last first): whatever the test did
			// to sessions, the counts the caps read must still be exact.
			t.Cleanup(func() {
				if !t.Failed() {
					CheckSessionCounts(t, s)
				}
			})
			tc.fn(t, s, clock)
		})
	}
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := fota.ErrorCode(err); got != code {
		t.Fatalf("error %v has code %q, want %q", err, got, code)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// NewRelease returns a release that can be stored.
func NewRelease(hardware, version string) *fota.Release {
	return &fota.Release{Product: "ecowatt", Hardware: hardware, Version: version, SecurityCounter: 1, PlaintextSize: 3000,
		PlaintextSHA256: fmt.Sprintf("%064x", 1), CiphertextSize: 3008, CiphertextSHA256: fmt.Sprintf("%064x", len(version)),
		ChunkSize: 1024, IV: fmt.Sprintf("%032x", 7), KeyID: "0123456789abcdef", SignatureAlg: "rsa-2048",
		Created: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), ManifestBytes: []byte(`{"version":"` + version + `"}`),
		Signature: []byte("sig"), LegacySignature: []byte("legacy"), BlobKey: "blob-" + hardware + "-" + version}
}

// NewDevice returns a device that can be stored, allowed both APIs.
func NewDevice(id string) *fota.Device {
	psk, _ := protocol.NewPSK()
	return &fota.Device{ID: id, Hardware: "esp32", Version: "1.0.3", PSK: psk, API: fota.APIBoth}
}

func testReleases(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	if r.ID == 0 || r.Published.IsZero() {
		t.Fatalf("CreateRelease did not set ID and Published: %+v", r)
	}
	wantCode(t, s.CreateRelease(ctx, NewRelease("esp32", "1.0.4")), fota.ECONFLICT)
	must(t, s.CreateRelease(ctx, NewRelease("esp32s3", "1.0.4")))
	ed := NewRelease("esp32", "1.0.5")
	ed.LegacySignature = nil
	must(t, s.CreateRelease(ctx, ed))

	got, err := s.ReleaseByVersion(ctx, "esp32", "1.0.4")
	must(t, err)
	if got.ID != r.ID || string(got.ManifestBytes) != string(r.ManifestBytes) || string(got.LegacySignature) != "legacy" ||
		got.CiphertextSize != 3008 || got.SecurityCounter != 1 || !got.Created.Equal(r.Created) || got.Chunks() != 3 {
		t.Fatalf("read back %+v", got)
	}
	if got, _ := s.Release(ctx, ed.ID); got.LegacySignature != nil {
		t.Fatal("a release without legacy signature reads back with one")
	}
	_, err = s.ReleaseByVersion(ctx, "esp32", "9.9.9")
	wantCode(t, err, fota.ENOTFOUND)
	_, err = s.Release(ctx, 999)
	wantCode(t, err, fota.ENOTFOUND)

	all, err := s.Releases(ctx, "")
	must(t, err)
	esp32, err := s.Releases(ctx, "esp32")
	must(t, err)
	if len(all) != 3 || len(esp32) != 2 || esp32[0].Version != "1.0.4" {
		t.Fatalf("list: %d all, %d esp32", len(all), len(esp32))
	}
	inUse, err := s.BlobInUse(ctx, r.BlobKey)
	must(t, err)
	unused, err := s.BlobInUse(ctx, "no-such-blob")
	must(t, err)
	if !inUse || unused {
		t.Fatalf("BlobInUse: %v, %v", inUse, unused)
	}
}

func testDeleteRelease(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	must(t, s.CreateDevice(ctx, NewDevice("d1")))
	sess := &fota.Session{ID: "s1", DeviceID: "d1", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 3}
	must(t, s.OpenSession(ctx, sess, fota.SessionCaps{}))
	wantCode(t, s.DeleteRelease(ctx, r.ID), fota.ECONFLICT)
	must(t, s.SetSessionState(ctx, "s1", fota.StateChange{State: fota.SessionFailed, Reason: "test"}))
	must(t, s.DeleteRelease(ctx, r.ID))
	wantCode(t, s.DeleteRelease(ctx, r.ID), fota.ENOTFOUND)
	// History survives the release.
	got, err := s.Session(ctx, "s1")
	must(t, err)
	if got.ReleaseVersion != "1.0.4" || got.ReleaseID != 0 {
		t.Fatalf("session after delete: %+v", got)
	}
}

func testDevices(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	d := NewDevice("ESP32_EcoWatt_Smart")
	must(t, s.CreateDevice(ctx, d))
	wantCode(t, s.CreateDevice(ctx, NewDevice("ESP32_EcoWatt_Smart")), fota.ECONFLICT)
	got, err := s.Device(ctx, d.ID)
	must(t, err)
	if got.PSK != d.PSK || got.Hardware != "esp32" || got.Version != "1.0.3" || !got.LastSeen.IsZero() || got.Created.IsZero() {
		t.Fatalf("read back %+v", got)
	}
	_, err = s.Device(ctx, "nobody")
	wantCode(t, err, fota.ENOTFOUND)

	c.Advance(time.Minute)
	must(t, s.DeviceSeen(ctx, d.ID, "1.0.4", nil, c.Now()))
	must(t, s.DeviceSeen(ctx, d.ID, "", nil, c.Now()))
	got, _ = s.Device(ctx, d.ID)
	if got.Version != "1.0.4" || !got.LastSeen.Equal(c.Now()) {
		t.Fatalf("after seen: %+v", got)
	}
	wantCode(t, s.DeviceSeen(ctx, "nobody", "", nil, c.Now()), fota.ENOTFOUND)
	// With what the device reports about itself, in the same write.
	inv := fota.Inventory{Chip: "esp32", SlotSize: 1 << 20, FreeFlash: 4096, AgentVersion: "0.14.0"}
	must(t, s.DeviceSeen(ctx, d.ID, "", &inv, c.Now()))
	if got, err := s.Device(ctx, d.ID); err != nil || got.Inventory.Chip != "esp32" || got.Inventory.SlotSize != 1<<20 ||
		got.Inventory.AgentVersion != "0.14.0" || !got.Inventory.Updated.Equal(c.Now().Truncate(time.Millisecond)) {
		t.Fatalf("inventory after a check-in that reports it: %+v %v", got.Inventory, err)
	}

	must(t, s.PinDevice(ctx, d.ID, "1.0.5"))
	got, _ = s.Device(ctx, d.ID)
	if got.PinnedVersion != "1.0.5" {
		t.Fatalf("pin: %+v", got)
	}
	must(t, s.PinDevice(ctx, d.ID, ""))
	wantCode(t, s.PinDevice(ctx, "nobody", "1.0.5"), fota.ENOTFOUND)
	must(t, s.CreateDevice(ctx, NewDevice("0-first")))
	list, err := s.Devices(ctx)
	must(t, err)
	if len(list) != 2 || list[0].ID != "0-first" {
		t.Fatalf("list: %+v", list)
	}
}

func testSessions(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	must(t, s.CreateDevice(ctx, NewDevice("d1")))
	open := func(id string) *fota.Session {
		sess := &fota.Session{ID: id, DeviceID: "d1", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APIEcoWatt, TotalChunks: 8}
		must(t, s.OpenSession(ctx, sess, fota.SessionCaps{}))
		return sess
	}
	wantCode(t, s.OpenSession(ctx, &fota.Session{ID: "s0", DeviceID: "d1", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APIBoth,
		TotalChunks: 8}, fota.SessionCaps{}), fota.EINVALID) // a policy, not an API
	open("s1")
	active, err := s.ActiveSession(ctx, "d1")
	must(t, err)
	if active.ID != "s1" || active.State != fota.SessionOpen || active.TotalChunks != 8 || active.API != fota.APIEcoWatt {
		t.Fatalf("active: %+v", active)
	}
	// A second session replaces the first.
	open("s2")
	old, _ := s.Session(ctx, "s1")
	if old.State != fota.SessionAbandoned {
		t.Fatalf("replaced session is %s", old.State)
	}
	// Ended and unknown sessions are skipped; the rest of the batch lands.
	must(t, s.RecordProgress(ctx, []fota.Progress{{SessionID: "s1", Next: 3, Bytes: 100}, {SessionID: "nope", Next: 3, Bytes: 100},
		{SessionID: "s2", Next: 4, Bytes: 4096}}))
	if old, _ := s.Session(ctx, "s1"); old.NextChunk != 0 || old.BytesServed != 0 {
		t.Fatalf("progress recorded on an ended session: %+v", old)
	}
	must(t, s.RecordProgress(ctx, []fota.Progress{{SessionID: "s2", Next: 2, Bytes: 1024}})) // never lowers
	must(t, s.RecordProgress(ctx, []fota.Progress{{SessionID: "s2", Next: 99}}))             // capped at total
	must(t, s.RecordProgress(ctx, nil))
	got, _ := s.Session(ctx, "s2")
	if got.NextChunk != 8 || got.BytesServed != 5120 || got.Percent() != 100 {
		t.Fatalf("progress: %+v", got)
	}
	must(t, s.SetSessionState(ctx, "s2", fota.StateChange{State: fota.SessionDownloaded, Reason: ""}))
	must(t, s.SetSessionState(ctx, "s2", fota.StateChange{State: fota.SessionRolledBack, Reason: "self-test failed"}))
	wantCode(t, s.SetSessionState(ctx, "s2", fota.StateChange{State: fota.SessionConfirmed, Reason: ""}), fota.EGONE)
	wantCode(t, s.SetSessionState(ctx, "s2", fota.StateChange{State: "exploded", Reason: ""}), fota.EINVALID)
	_, err = s.ActiveSession(ctx, "d1")
	wantCode(t, err, fota.ENOTFOUND)
	// A rollback on the EcoWatt API, which cannot be authenticated,
	// excludes nothing; one on the native API does.
	rejected, err := s.RejectedReleases(ctx, "d1")
	must(t, err)
	if len(rejected) != 0 {
		t.Fatalf("EcoWatt-API rollback rejected releases %v", rejected)
	}
	native := &fota.Session{ID: "s3", DeviceID: "d1", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 8}
	must(t, s.OpenSession(ctx, native, fota.SessionCaps{}))
	must(t, s.SetSessionState(ctx, "s3", fota.StateChange{State: fota.SessionRolledBack, Reason: "self-test failed"}))
	rejected, err = s.RejectedReleases(ctx, "d1")
	must(t, err)
	if len(rejected) != 1 || rejected[0] != r.ID {
		t.Fatalf("rejected: %v", rejected)
	}
	got, _ = s.Session(ctx, "s2")
	if got.Reason != "self-test failed" {
		t.Fatalf("reason: %q", got.Reason)
	}
	// Progress events mark each quarter once.
	evs, err := s.Events(ctx, fota.EventFilter{DeviceID: "d1"})
	must(t, err)
	quarters := 0
	for _, e := range evs {
		if e.Kind == fota.EventProgress {
			quarters++
		}
	}
	if quarters != 4 {
		t.Fatalf("%d progress events, want 4", quarters)
	}
}

func testSessionCap(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	for i := range 3 {
		id := fmt.Sprintf("d%d", i)
		must(t, s.CreateDevice(ctx, NewDevice(id)))
		err := s.OpenSession(ctx, &fota.Session{ID: "s" + id, DeviceID: id, ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 3}, fota.SessionCaps{Total: 2})
		if i < 2 {
			must(t, err)
		} else {
			wantCode(t, err, fota.EUNAVAILABLE)
		}
	}
	// A device replacing its own session does not need a free place.
	must(t, s.OpenSession(ctx, &fota.Session{ID: "s-d0-again", DeviceID: "d0", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 3}, fota.SessionCaps{Total: 2}))
}

func testStaleSessions(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	must(t, s.CreateDevice(ctx, NewDevice("idle")))
	must(t, s.CreateDevice(ctx, NewDevice("busy")))
	must(t, s.OpenSession(ctx, &fota.Session{ID: "old", DeviceID: "idle", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 3}, fota.SessionCaps{Total: 1}))
	c.Advance(25 * time.Hour)
	must(t, s.OpenSession(ctx, &fota.Session{ID: "new", DeviceID: "busy", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 3}, fota.SessionCaps{Total: 1}))
	old, _ := s.Session(ctx, "old")
	if old.State != fota.SessionAbandoned {
		t.Fatalf("idle session is %s", old.State)
	}
}

func testConfirm(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	r.SecurityCounter = 5
	must(t, s.CreateRelease(ctx, r))
	must(t, s.CreateDevice(ctx, NewDevice("d1")))
	must(t, s.OpenSession(ctx, &fota.Session{ID: "s1", DeviceID: "d1", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 3}, fota.SessionCaps{}))
	for _, st := range []string{fota.SessionDownloaded, fota.SessionVerified, fota.SessionApplied} {
		must(t, s.SetSessionState(ctx, "s1", fota.StateChange{State: st}))
	}
	must(t, s.SetSessionState(ctx, "s1", fota.StateChange{State: fota.SessionConfirmed, RecordVersion: true, RecordCounter: true}))
	d, _ := s.Device(ctx, "d1")
	if d.Version != "1.0.4" || d.SecurityCounter != 5 {
		t.Fatalf("confirmed device: %+v", d)
	}
	// A confirmation that records nothing (unauthenticated, for a
	// native-capable device) leaves the device as it was.
	must(t, s.CreateDevice(ctx, NewDevice("d2")))
	must(t, s.OpenSession(ctx, &fota.Session{ID: "s2", DeviceID: "d2", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APIEcoWatt, TotalChunks: 3}, fota.SessionCaps{}))
	must(t, s.SetSessionState(ctx, "s2", fota.StateChange{State: fota.SessionConfirmed}))
	if d, _ := s.Device(ctx, "d2"); d.Version != "1.0.3" || d.SecurityCounter != 0 {
		t.Fatalf("confirmation that records nothing changed the device: %+v", d)
	}
	// Version without counter: an ecowatt-only device's confirmation.
	must(t, s.CreateDevice(ctx, NewDevice("d3")))
	must(t, s.OpenSession(ctx, &fota.Session{ID: "s3", DeviceID: "d3", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APIEcoWatt, TotalChunks: 3}, fota.SessionCaps{}))
	must(t, s.SetSessionState(ctx, "s3", fota.StateChange{State: fota.SessionConfirmed, RecordVersion: true}))
	if d, _ := s.Device(ctx, "d3"); d.Version != "1.0.4" || d.SecurityCounter != 0 {
		t.Fatalf("version-only confirmation: %+v", d)
	}
}

func testAPIPolicy(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	d := NewDevice("d1")
	d.API = ""
	must(t, s.CreateDevice(ctx, d))
	if got, _ := s.Device(ctx, "d1"); got.API != fota.APINative {
		t.Fatalf("default API policy %q, want native", got.API)
	}
	legacy := NewDevice("legacy")
	legacy.API = fota.APIEcoWatt
	must(t, s.CreateDevice(ctx, legacy))
	if got, _ := s.Device(ctx, "legacy"); got.API != fota.APIEcoWatt {
		t.Fatalf("API policy %q, want ecowatt", got.API)
	}
	bad := NewDevice("bad")
	bad.API = "smoke-signals"
	wantCode(t, s.CreateDevice(ctx, bad), fota.EINVALID)

	must(t, s.OpenSession(ctx, &fota.Session{ID: "s1", DeviceID: "legacy", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APIEcoWatt, TotalChunks: 3}, fota.SessionCaps{}))
	// Widening keeps the session; narrowing to native ends it.
	ended, err := s.SetDeviceAPI(ctx, "legacy", fota.APIBoth)
	must(t, err)
	if len(ended) != 0 {
		t.Fatalf("widening ended %d sessions", len(ended))
	}
	ended, err = s.SetDeviceAPI(ctx, "legacy", fota.APINative)
	must(t, err)
	if len(ended) != 1 || ended[0].ID != "s1" {
		t.Fatalf("narrowing ended %+v, want s1", ended)
	}
	if sess, _ := s.Session(ctx, "s1"); sess.State != fota.SessionAbandoned {
		t.Fatalf("session after narrowing: %s", sess.State)
	}
	if got, _ := s.Device(ctx, "legacy"); got.API != fota.APINative {
		t.Fatalf("API policy %q after set", got.API)
	}
	_, err = s.SetDeviceAPI(ctx, "nobody", fota.APIBoth)
	wantCode(t, err, fota.ENOTFOUND)
	_, err = s.SetDeviceAPI(ctx, "legacy", "carrier-pigeon")
	wantCode(t, err, fota.EINVALID)
	evs, err := s.Events(ctx, fota.EventFilter{DeviceID: "legacy"})
	must(t, err)
	if evs[0].Kind != fota.EventAPIPolicy {
		t.Fatalf("newest event %s, want %s", evs[0].Kind, fota.EventAPIPolicy)
	}
}

func testBackoffs(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	d := NewDevice("legacy")
	d.API = fota.APIEcoWatt
	must(t, s.CreateDevice(ctx, d))
	fail := func(id string, failures int, until time.Time) {
		t.Helper()
		must(t, s.OpenSession(ctx, &fota.Session{ID: id, DeviceID: "legacy", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APIEcoWatt, TotalChunks: 3}, fota.SessionCaps{}))
		must(t, s.SetSessionState(ctx, id, fota.StateChange{State: fota.SessionRolledBack, Reason: "boot failed",
			Backoff: &fota.Backoff{DeviceID: "legacy", ReleaseID: r.ID, Failures: failures, Until: until}}))
	}
	first := c.Now().Add(time.Hour)
	fail("s1", 1, first)
	bs, err := s.Backoffs(ctx, "legacy")
	must(t, err)
	if len(bs) != 1 || bs[0].Failures != 1 || !bs[0].Until.Equal(first) || bs[0].ReleaseVersion != "1.0.4" || bs[0].ReleaseID != r.ID {
		t.Fatalf("backoffs: %+v", bs)
	}
	second := c.Now().Add(2 * time.Hour)
	fail("s2", 2, second) // replaces, not adds
	bs, err = s.Backoffs(ctx, "legacy")
	must(t, err)
	if len(bs) != 1 || bs[0].Failures != 2 || !bs[0].Until.Equal(second) {
		t.Fatalf("backoffs after a second failure: %+v", bs)
	}
	if rejected, _ := s.RejectedReleases(ctx, "legacy"); len(rejected) != 0 {
		t.Fatalf("backed-off release is rejected for good: %v", rejected)
	}
	n, err := s.ClearBackoffs(ctx, "legacy")
	must(t, err)
	if n != 1 {
		t.Fatalf("cleared %d, want 1", n)
	}
	if bs, _ := s.Backoffs(ctx, "legacy"); len(bs) != 0 {
		t.Fatalf("backoffs after clear: %+v", bs)
	}
	_, err = s.ClearBackoffs(ctx, "nobody")
	wantCode(t, err, fota.ENOTFOUND)
	evs, _ := s.Events(ctx, fota.EventFilter{DeviceID: "legacy"})
	if evs[0].Kind != fota.EventBackoffClear {
		t.Fatalf("newest event %s, want %s", evs[0].Kind, fota.EventBackoffClear)
	}
	// Deleting the release takes its backoffs with it.
	fail("s3", 1, c.Now().Add(time.Hour))
	must(t, s.DeleteRelease(ctx, r.ID))
	if bs, _ := s.Backoffs(ctx, "legacy"); len(bs) != 0 {
		t.Fatalf("backoffs of a deleted release: %+v", bs)
	}
}

func testConcurrentProgress(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	must(t, s.CreateDevice(ctx, NewDevice("d1")))
	must(t, s.OpenSession(ctx, &fota.Session{ID: "s1", DeviceID: "d1", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 100}, fota.SessionCaps{}))
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 1; i <= 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.RecordProgress(ctx, []fota.Progress{{SessionID: "s1", Next: i * 2, Bytes: 10}})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	got, _ := s.Session(ctx, "s1")
	if got.NextChunk != 100 || got.BytesServed != 500 {
		t.Fatalf("after concurrent progress: next %d, bytes %d", got.NextChunk, got.BytesServed)
	}
}

func testTokensAndNonces(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	h := sha256.Sum256([]byte("fota_secret"))
	tok := &fota.Token{Name: "admin", Hash: h}
	must(t, s.CreateToken(ctx, tok))
	wantCode(t, s.CreateToken(ctx, &fota.Token{Name: "again", Hash: h}), fota.ECONFLICT)
	got, err := s.TokenByHash(ctx, h)
	must(t, err)
	if got.Name != "admin" || got.ID != tok.ID {
		t.Fatalf("token %+v", got)
	}
	_, err = s.TokenByHash(ctx, sha256.Sum256([]byte("other")))
	wantCode(t, err, fota.ENOTFOUND)
	if n, _ := s.CountTokens(ctx); n != 1 {
		t.Fatalf("%d tokens", n)
	}

	exp := c.Now().Add(10 * time.Minute)
	must(t, s.UseNonce(ctx, "d1", "n1", exp))
	wantCode(t, s.UseNonce(ctx, "d1", "n1", exp), fota.ECONFLICT)
	must(t, s.UseNonce(ctx, "d2", "n1", exp)) // nonces are per device
	must(t, s.PurgeNonces(ctx, exp.Add(time.Second)))
	must(t, s.UseNonce(ctx, "d1", "n1", exp.Add(time.Hour)))

	// The same nonce from many requests at once: exactly one is new.
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted, replays := 0, 0
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.UseNonce(ctx, "d3", "race", exp)
			mu.Lock()
			defer mu.Unlock()
			switch fota.ErrorCode(err) {
			case "":
				accepted++
			case fota.ECONFLICT:
				replays++
			default:
				t.Errorf("UseNonce: %v", err)
			}
		}()
	}
	wg.Wait()
	if accepted != 1 || replays != 63 {
		t.Fatalf("concurrent uses of one nonce: %d accepted, %d replays; want 1 and 63", accepted, replays)
	}
}

func testEvents(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	must(t, s.CreateRelease(ctx, NewRelease("esp32", "1.0.4")))
	must(t, s.CreateDevice(ctx, NewDevice("d1")))
	must(t, s.AddEvent(ctx, &fota.Event{Kind: fota.EventFailed, DeviceID: "d1", Detail: "x"}))
	all, err := s.Events(ctx, fota.EventFilter{})
	must(t, err)
	if len(all) != 3 || all[0].Kind != fota.EventFailed || all[2].Kind != fota.EventPublished {
		t.Fatalf("events newest first: %+v", all)
	}
	one, _ := s.Events(ctx, fota.EventFilter{Limit: 1})
	dev, _ := s.Events(ctx, fota.EventFilter{DeviceID: "d1"})
	if len(one) != 1 || len(dev) != 2 {
		t.Fatalf("filters: %d, %d", len(one), len(dev))
	}
}

// Every field of EventFilter narrows the list, alone and together; the
// result is newest first and at most Limit long.
func testEventFilters(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	var ids []int64
	for i, e := range []fota.Event{
		{Kind: fota.EventFailed, DeviceID: "d1", RolloutID: 1},
		{Kind: fota.EventConfirmed, DeviceID: "d2", RolloutID: 1},
		{Kind: fota.EventTokenCreated, Actor: "local"},
		{Kind: fota.EventFailed, DeviceID: "d2", RolloutID: 2},
		{Kind: fota.EventUserAdded, Actor: "token:ci"},
		{Kind: fota.EventConfirmed, DeviceID: "d1"},
		{Kind: fota.EventUserRemoved, Actor: "local"},
		{Kind: fota.EventFailed, DeviceID: "d1", RolloutID: 1, Actor: "token:ci"},
	} {
		e.Detail = fmt.Sprint(i)
		must(t, s.AddEvent(ctx, &e))
		ids = append(ids, e.ID)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("event ids not increasing: %v", ids)
		}
	}
	for _, tc := range []struct {
		name string
		f    fota.EventFilter
		want string
	}{
		{"none", fota.EventFilter{}, "7 6 5 4 3 2 1 0"},
		{"limit", fota.EventFilter{Limit: 3}, "7 6 5"},
		{"device", fota.EventFilter{DeviceID: "d1"}, "7 5 0"},
		{"kind", fota.EventFilter{Kind: fota.EventFailed}, "7 3 0"},
		{"kind matches exactly", fota.EventFilter{Kind: "fail"}, ""},
		{"rollout", fota.EventFilter{RolloutID: 1}, "7 1 0"},
		{"another rollout", fota.EventFilter{RolloutID: 2}, "3"},
		{"no such rollout", fota.EventFilter{RolloutID: 99}, ""},
		{"actor", fota.EventFilter{Actor: "local"}, "6 2"},
		{"actor matches exactly", fota.EventFilter{Actor: "token"}, ""},
		{"after", fota.EventFilter{AfterID: ids[4]}, "7 6 5"},
		{"before", fota.EventFilter{BeforeID: ids[3]}, "2 1 0"},
		{"between", fota.EventFilter{AfterID: ids[1], BeforeID: ids[5]}, "4 3 2"},
		{"an empty range", fota.EventFilter{AfterID: ids[3], BeforeID: ids[4]}, ""},
		{"a page before, limited", fota.EventFilter{BeforeID: ids[6], Limit: 2}, "5 4"},
		{"after the newest", fota.EventFilter{AfterID: ids[7]}, ""},
		{"kind and device", fota.EventFilter{Kind: fota.EventFailed, DeviceID: "d1"}, "7 0"},
		{"kind and rollout", fota.EventFilter{Kind: fota.EventConfirmed, RolloutID: 1}, "1"},
		{"actor and rollout", fota.EventFilter{Actor: "token:ci", RolloutID: 1}, "7"},
		{"all of them", fota.EventFilter{DeviceID: "d1", Kind: fota.EventFailed, RolloutID: 1, Actor: "token:ci",
			AfterID: ids[0], BeforeID: ids[7] + 1, Limit: 5}, "7"},
	} {
		evs, err := s.Events(ctx, tc.f)
		must(t, err)
		var got []string
		for _, e := range evs {
			got = append(got, e.Detail)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%s: events %v, want [%s]", tc.name, got, tc.want)
		}
	}
}

func testEcoWattNeverReplacesNative(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	d := NewDevice("d1")
	d.API = fota.APIBoth
	must(t, s.CreateDevice(ctx, d))
	open := func(id, api string) error {
		return s.OpenSession(ctx, &fota.Session{ID: id, DeviceID: "d1", ReleaseID: r.ID, ReleaseVersion: r.Version, API: api, TotalChunks: 3}, fota.SessionCaps{})
	}
	must(t, open("native", fota.APINative))
	wantCode(t, open("legacy", fota.APIEcoWatt), fota.ECONFLICT)
	if sess, _ := s.Session(ctx, "native"); sess.State != fota.SessionOpen {
		t.Fatalf("native session %s after a refused EcoWatt open", sess.State)
	}
	// The other way round is allowed: the native API is authenticated.
	must(t, s.SetSessionState(ctx, "native", fota.StateChange{State: fota.SessionFailed}))
	must(t, open("legacy", fota.APIEcoWatt))
	must(t, open("native2", fota.APINative))
	if sess, _ := s.Session(ctx, "legacy"); sess.State != fota.SessionAbandoned {
		t.Fatalf("EcoWatt session %s after a native open", sess.State)
	}
}

func testOpenRespectsPolicy(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	d := NewDevice("d1")
	d.API = fota.APINative
	must(t, s.CreateDevice(ctx, d))
	open := func(id, api string) error {
		return s.OpenSession(ctx, &fota.Session{ID: id, DeviceID: "d1", ReleaseID: r.ID, ReleaseVersion: r.Version, API: api, TotalChunks: 3}, fota.SessionCaps{})
	}
	wantCode(t, open("legacy", fota.APIEcoWatt), fota.EFORBIDDEN)
	must(t, open("native", fota.APINative))
	wantCode(t, s.OpenSession(ctx, &fota.Session{ID: "x", DeviceID: "nobody", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative,
		TotalChunks: 3}, fota.SessionCaps{}), fota.ENOTFOUND)
}

func testSessionCapPerAPI(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	caps := fota.SessionCaps{Total: 3, OnAPI: 2}
	for i, api := range []string{fota.APIEcoWatt, fota.APIEcoWatt, fota.APIEcoWatt, fota.APINative, fota.APINative} {
		id := fmt.Sprintf("d%d", i)
		d := NewDevice(id)
		d.API = fota.APIBoth
		must(t, s.CreateDevice(ctx, d))
		c := caps
		if api == fota.APINative {
			c.OnAPI = 0
		}
		err := s.OpenSession(ctx, &fota.Session{ID: "s" + id, DeviceID: id, ReleaseID: r.ID, ReleaseVersion: r.Version, API: api, TotalChunks: 3}, c)
		switch i {
		case 2, 4: // the third EcoWatt session passes OnAPI; the second native one the total
			wantCode(t, err, fota.EUNAVAILABLE)
		default:
			must(t, err)
		}
	}
}

func testRepeatedState(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	must(t, s.CreateDevice(ctx, NewDevice("d1")))
	must(t, s.OpenSession(ctx, &fota.Session{ID: "s1", DeviceID: "d1", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 3}, fota.SessionCaps{}))
	for range 5 {
		must(t, s.SetSessionState(ctx, "s1", fota.StateChange{State: fota.SessionVerified}))
	}
	must(t, s.SetSessionState(ctx, "s1", fota.StateChange{State: fota.SessionDownloaded}))
	evs, err := s.Events(ctx, fota.EventFilter{DeviceID: "d1"})
	must(t, err)
	n := 0
	for _, e := range evs {
		if e.Kind == fota.EventVerified || e.Kind == fota.EventDownloaded {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d events for five verified reports and a late downloaded, want 1", n)
	}
	if sess, _ := s.Session(ctx, "s1"); sess.State != fota.SessionVerified {
		t.Fatalf("state %s", sess.State)
	}
}

func testScopedTokens(t *testing.T, s fota.Store, c *Clock) {
	ctx := fota.WithActor(context.Background(), "token:root")
	expires := c.Now().Add(time.Hour).Truncate(time.Millisecond)
	prom := &fota.Token{Name: "prom", Hash: [32]byte{1}, Scope: fota.ScopeMetrics, Expires: expires}
	must(t, s.CreateToken(ctx, prom))
	must(t, s.CreateToken(ctx, &fota.Token{Name: "root", Hash: [32]byte{2}}))
	wantCode(t, s.CreateToken(ctx, &fota.Token{Name: "prom", Hash: [32]byte{3}}), fota.ECONFLICT)
	wantCode(t, s.CreateToken(ctx, &fota.Token{Name: "other", Hash: [32]byte{1}}), fota.ECONFLICT)
	wantCode(t, s.CreateToken(ctx, &fota.Token{Name: "bad", Hash: [32]byte{4}, Scope: "superuser"}), fota.EINVALID)
	got, err := s.TokenByHash(ctx, [32]byte{1})
	must(t, err)
	if got.Name != "prom" || got.Scope != fota.ScopeMetrics || !got.Expires.Equal(expires) || !got.Revoked.IsZero() {
		t.Fatalf("token: %+v", got)
	}
	if root, _ := s.TokenByHash(ctx, [32]byte{2}); root.Scope != fota.ScopeAdmin {
		t.Fatalf("default scope %q, want admin", root.Scope)
	}
	must(t, s.RevokeToken(ctx, "prom"))
	wantCode(t, s.RevokeToken(ctx, "prom"), fota.ECONFLICT)
	wantCode(t, s.RevokeToken(ctx, "nobody"), fota.ENOTFOUND)
	if got, _ := s.TokenByHash(ctx, [32]byte{1}); got.Revoked.IsZero() || got.InForce(c.Now()) {
		t.Fatalf("revoked token: %+v", got)
	}
	ts, err := s.Tokens(ctx)
	must(t, err)
	if len(ts) != 2 || ts[0].Name != "prom" || ts[1].Name != "root" {
		t.Fatalf("tokens: %+v", ts)
	}
	evs, err := s.Events(ctx, fota.EventFilter{})
	must(t, err)
	kinds := map[string]string{}
	for _, e := range evs {
		kinds[e.Kind] = e.Actor
		if strings.Contains(e.Detail, "fota_") {
			t.Fatalf("an event holds a token's text: %+v", e)
		}
	}
	if kinds[fota.EventTokenCreated] != "token:root" || kinds[fota.EventTokenRevoked] != "token:root" {
		t.Fatalf("token events and their actors: %v", kinds)
	}
}

func testWithdrawRelease(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	other := NewRelease("esp32", "1.0.5")
	must(t, s.CreateRelease(ctx, other))
	must(t, s.CreateDevice(ctx, NewDevice("d1")))
	must(t, s.CreateDevice(ctx, NewDevice("d2")))
	open := func(id, dev string, rel *fota.Release) error {
		return s.OpenSession(ctx, &fota.Session{ID: id, DeviceID: dev, ReleaseID: rel.ID, ReleaseVersion: rel.Version, API: fota.APINative, TotalChunks: 3}, fota.SessionCaps{})
	}
	must(t, open("s1", "d1", r))
	must(t, open("s2", "d2", other))

	ended, err := s.WithdrawRelease(ctx, r.ID, "bricks the inverter link")
	must(t, err)
	if len(ended) != 1 || ended[0].ID != "s1" {
		t.Fatalf("withdrawal ended %+v, want s1 only", ended)
	}
	got, _ := s.Session(ctx, "s1")
	if got.State != fota.SessionAbandoned || !strings.Contains(got.Reason, "1.0.4 was withdrawn: bricks the inverter link") {
		t.Fatalf("session of a withdrawn release: %s %q", got.State, got.Reason)
	}
	if got, _ := s.Session(ctx, "s2"); got.State != fota.SessionOpen {
		t.Fatalf("another release's session: %s", got.State)
	}
	rel, err := s.Release(ctx, r.ID)
	must(t, err)
	if rel.Withdrawn.IsZero() {
		t.Fatal("withdrawn release reads back without Withdrawn")
	}
	if rel, _ := s.Release(ctx, other.ID); !rel.Withdrawn.IsZero() {
		t.Fatal("another release reads back withdrawn")
	}
	// Nothing opens on it any more, and withdrawing it again says so.
	wantCode(t, open("s3", "d1", r), fota.EGONE)
	_, err = s.WithdrawRelease(ctx, r.ID, "")
	wantCode(t, err, fota.ECONFLICT)
	_, err = s.WithdrawRelease(ctx, 999, "")
	wantCode(t, err, fota.ENOTFOUND)
	evs, _ := s.Events(ctx, fota.EventFilter{Limit: 1})
	if evs[0].Kind != fota.EventWithdrawn || evs[0].ReleaseVersion != "1.0.4" {
		t.Fatalf("newest event %+v, want %s of 1.0.4", evs[0], fota.EventWithdrawn)
	}
}

func testRemoveDevice(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	must(t, s.CreateDevice(ctx, NewDevice("d1")))
	must(t, s.CreateDevice(ctx, NewDevice("d2")))
	must(t, s.OpenSession(ctx, &fota.Session{ID: "s0", DeviceID: "d1", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APIEcoWatt, TotalChunks: 3}, fota.SessionCaps{}))
	must(t, s.SetSessionState(ctx, "s0", fota.StateChange{State: fota.SessionFailed,
		Backoff: &fota.Backoff{DeviceID: "d1", ReleaseID: r.ID, Failures: 1, Until: c.Now().Add(time.Hour)}}))
	must(t, s.OpenSession(ctx, &fota.Session{ID: "s1", DeviceID: "d1", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 3}, fota.SessionCaps{}))

	c.Advance(time.Minute)
	ended, err := s.RemoveDevice(ctx, "d1")
	must(t, err)
	if len(ended) != 1 || ended[0].ID != "s1" {
		t.Fatalf("removal ended %+v, want s1", ended)
	}
	if got, _ := s.Session(ctx, "s1"); got.State != fota.SessionAbandoned || got.Reason != "the device was removed" {
		t.Fatalf("session of a removed device: %s %q", got.State, got.Reason)
	}
	d, err := s.Device(ctx, "d1")
	must(t, err)
	if !d.Removed.Equal(c.Now().Truncate(time.Millisecond)) {
		t.Fatalf("removed device reads back with Removed %v, want %v", d.Removed, c.Now())
	}
	if ds, _ := s.Devices(ctx); len(ds) != 1 || ds[0].ID != "d2" {
		t.Fatalf("devices after a removal: %d, want d2 alone", len(ds))
	}
	if bs, _ := s.Backoffs(ctx, "d1"); len(bs) != 0 {
		t.Fatalf("backoffs of a removed device: %+v", bs)
	}
	// The tombstone refuses everything that would act for the device.
	err = s.OpenSession(ctx, &fota.Session{ID: "s2", DeviceID: "d1", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 3}, fota.SessionCaps{})
	wantCode(t, err, fota.ENOTFOUND)
	wantCode(t, s.PinDevice(ctx, "d1", "1.0.4"), fota.ENOTFOUND)
	_, err = s.SetDeviceAPI(ctx, "d1", fota.APINative)
	wantCode(t, err, fota.ENOTFOUND)
	_, err = s.RemoveDevice(ctx, "d1")
	wantCode(t, err, fota.ENOTFOUND)
	_, err = s.RemoveDevice(ctx, "nobody")
	wantCode(t, err, fota.ENOTFOUND)
	err = s.CreateDevice(ctx, NewDevice("d1"))
	wantCode(t, err, fota.ECONFLICT)
	if !strings.Contains(fota.ErrorMessage(err), "was removed") {
		t.Fatalf("registering a removed id: %v", err)
	}
	// Its history stays, ending with the removal.
	evs, _ := s.Events(ctx, fota.EventFilter{DeviceID: "d1"})
	if len(evs) < 4 || evs[0].Kind != fota.EventDeviceRemoved || evs[len(evs)-1].Kind != fota.EventDeviceAdded {
		t.Fatalf("history of a removed device: %+v", evs)
	}
}

// addEvents records n events a minute apart, returning their ids oldest first.
func addEvents(t *testing.T, s fota.Store, c *Clock, n int) []int64 {
	t.Helper()
	var ids []int64
	for i := range n {
		c.Advance(time.Minute)
		e := &fota.Event{Kind: fota.EventFailed, DeviceID: "d", Detail: fmt.Sprint(i)}
		must(t, s.AddEvent(context.Background(), e))
		ids = append(ids, e.ID)
	}
	return ids
}

func eventDetails(t *testing.T, s fota.Store) []string {
	t.Helper()
	evs, err := s.Events(context.Background(), fota.EventFilter{Limit: 1000})
	must(t, err)
	var out []string
	for _, e := range evs {
		out = append(out, e.Detail)
	}
	return out
}

func testPruneEvents(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	start := c.Now()
	addEvents(t, s, c, 10) // details 0..9 at start+1m .. start+10m
	// By age, in batches: the events before start+4m30s (0, 1, 2, 3).
	before := start.Add(4*time.Minute + 30*time.Second)
	n, err := s.PruneEvents(ctx, before, 0, 3)
	must(t, err)
	if n != 3 {
		t.Fatalf("first batch pruned %d, want 3", n)
	}
	n, err = s.PruneEvents(ctx, before, 0, 3)
	must(t, err)
	if n != 1 {
		t.Fatalf("second batch pruned %d, want the 1 left", n)
	}
	if n, _ = s.PruneEvents(ctx, before, 0, 3); n != 0 {
		t.Fatalf("a third batch pruned %d", n)
	}
	if got := fmt.Sprint(eventDetails(t, s)); got != "[9 8 7 6 5 4]" {
		t.Fatalf("after pruning by age: %s", got)
	}
	// By count: keep the newest 2, in batches of 3.
	n, _ = s.PruneEvents(ctx, time.Time{}, 2, 3)
	if n != 3 {
		t.Fatalf("count batch pruned %d, want 3", n)
	}
	n, _ = s.PruneEvents(ctx, time.Time{}, 2, 3)
	if n != 1 {
		t.Fatalf("second count batch pruned %d, want 1", n)
	}
	if got := fmt.Sprint(eventDetails(t, s)); got != "[9 8]" {
		t.Fatalf("after pruning by count: %s", got)
	}
	// Both at once, one batch: age first, then count, never past batch.
	addEvents(t, s, c, 4) // 0..3 again, newer than 9 and 8
	n, _ = s.PruneEvents(ctx, c.Now().Add(-3*time.Minute-30*time.Second), 3, 10)
	if got := fmt.Sprint(eventDetails(t, s)); n != 3 || got != "[3 2 1]" {
		t.Fatalf("age and count pruned %d, left %s; want 3, [3 2 1]", n, got)
	}
	if n, _ := s.PruneEvents(ctx, time.Time{}, 0, 10); n != 0 {
		t.Fatalf("no limits pruned %d", n)
	}
}

func testPruneSessions(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	for _, id := range []string{"d1", "d2", "d3", "d4", "d5"} {
		must(t, s.CreateDevice(ctx, NewDevice(id)))
	}
	end := func(id, dev, api, state string) {
		t.Helper()
		must(t, s.OpenSession(ctx, &fota.Session{ID: id, DeviceID: dev, ReleaseID: r.ID, ReleaseVersion: r.Version, API: api, TotalChunks: 3}, fota.SessionCaps{}))
		if state != fota.SessionOpen {
			must(t, s.SetSessionState(ctx, id, fota.StateChange{State: state}))
		}
		c.Advance(time.Minute)
	}
	start := c.Now()
	end("rb", "d1", fota.APINative, fota.SessionRolledBack) // keeps 1.0.4 from d1: never pruned
	end("old-active", "d2", fota.APINative, fota.SessionOpen)
	end("a", "d3", fota.APINative, fota.SessionConfirmed)
	end("b", "d4", fota.APIEcoWatt, fota.SessionRolledBack) // an EcoWatt rollback excludes nothing
	end("c", "d5", fota.APINative, fota.SessionFailed)
	end("d", "d3", fota.APINative, fota.SessionRefused) // excludes too
	end("e", "d4", fota.APIEcoWatt, fota.SessionConfirmed)

	left := func() string {
		t.Helper()
		var out []string
		for _, id := range []string{"rb", "old-active", "a", "b", "c", "d", "e"} {
			if _, err := s.Session(ctx, id); err == nil {
				out = append(out, id)
			} else {
				wantCode(t, err, fota.ENOTFOUND)
			}
		}
		return fmt.Sprint(out)
	}
	// Far past everything by age, one at a time: the active session and the
	// two exclusions stay.
	future := c.Now().Add(time.Hour)
	n, err := s.PruneSessions(ctx, start.Add(3*time.Minute+30*time.Second), 0, 1)
	must(t, err)
	if n != 1 || left() != "[rb old-active b c d e]" {
		t.Fatalf("pruned %d, left %s; want 1 (a)", n, left())
	}
	// By count: the newest 2 prunable (e and c) stay.
	n, _ = s.PruneSessions(ctx, time.Time{}, 2, 10)
	if n != 1 || left() != "[rb old-active c d e]" {
		t.Fatalf("count pruned %d, left %s", n, left())
	}
	// The rollback's exclusion survived.
	if rejected, _ := s.RejectedReleases(ctx, "d1"); len(rejected) != 1 {
		t.Fatalf("rejected releases of d1 after pruning: %v", rejected)
	}
	n, _ = s.PruneSessions(ctx, future, 0, 10)
	if n != 2 || left() != "[rb old-active d]" {
		t.Fatalf("pruning everything due pruned %d, left %s", n, left())
	}

	// Sessions ended in one transaction share a time: the count still cuts
	// exactly.
	for _, id := range []string{"t1", "t2", "t3", "t4"} {
		dev := NewDevice("dev-" + id)
		must(t, s.CreateDevice(ctx, dev))
		must(t, s.OpenSession(ctx, &fota.Session{ID: id, DeviceID: dev.ID, ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 3}, fota.SessionCaps{}))
	}
	c.Advance(time.Minute)
	_, err = s.WithdrawRelease(ctx, r.ID, "")
	must(t, err)
	// The withdrawal ended old-active too: five end at once, three stay.
	n, _ = s.PruneSessions(ctx, time.Time{}, 3, 10)
	if n != 2 {
		t.Fatalf("keeping 3 of 5 sessions ended together pruned %d", n)
	}
	n, _ = s.PruneSessions(ctx, time.Time{}, 3, 10)
	if n != 0 {
		t.Fatalf("pruning again pruned %d", n)
	}
}

func testPruneRemovedDevices(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	for _, id := range []string{"gone1", "gone2", "recent", "live"} {
		must(t, s.CreateDevice(ctx, NewDevice(id)))
		must(t, s.OpenSession(ctx, &fota.Session{ID: "s-" + id, DeviceID: id, ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 3}, fota.SessionCaps{}))
		must(t, s.SetSessionState(ctx, "s-"+id, fota.StateChange{State: fota.SessionRolledBack}))
	}
	_, err := s.RemoveDevice(ctx, "gone1")
	must(t, err)
	_, err = s.RemoveDevice(ctx, "gone2")
	must(t, err)
	c.Advance(time.Hour)
	cutoff := c.Now()
	_, err = s.RemoveDevice(ctx, "recent")
	must(t, err)

	n, err := s.PruneRemovedDevices(ctx, cutoff, 1)
	must(t, err)
	if n != 1 {
		t.Fatalf("pruned %d devices, want 1 (the batch)", n)
	}
	n, _ = s.PruneRemovedDevices(ctx, cutoff, 10)
	if n != 1 {
		t.Fatalf("second batch pruned %d devices, want 1", n)
	}
	for _, id := range []string{"gone1", "gone2"} {
		_, err := s.Device(ctx, id)
		wantCode(t, err, fota.ENOTFOUND)
		_, err = s.Session(ctx, "s-"+id)
		wantCode(t, err, fota.ENOTFOUND)
	}
	for _, id := range []string{"recent", "live"} {
		if _, err := s.Device(ctx, id); err != nil {
			t.Fatalf("device %s: %v", id, err)
		}
		if _, err := s.Session(ctx, "s-"+id); err != nil {
			t.Fatalf("session of %s: %v", id, err)
		}
	}
	// Gone for good, the id may be registered again.
	must(t, s.CreateDevice(ctx, NewDevice("gone1")))
}
