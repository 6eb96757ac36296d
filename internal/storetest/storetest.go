// Package storetest is the conformance suite every fota.Store must pass.
// internal/sqlite runs it always; other stores run the same tests.
package storetest

import (
	"context"
	"crypto/sha256"
	"fmt"
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
		{"ConfirmRaisesDevice", testConfirm},
		{"ConcurrentProgress", testConcurrentProgress},
		{"TokensAndNonces", testTokensAndNonces},
		{"Events", testEvents},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &Clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
			s := newStore(t, clock)
			t.Cleanup(func() { s.Close() })
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

// NewDevice returns a device that can be stored.
func NewDevice(id string) *fota.Device {
	psk, _ := protocol.NewPSK()
	return &fota.Device{ID: id, Hardware: "esp32", Version: "1.0.3", PSK: psk}
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
	must(t, s.OpenSession(ctx, sess, 0))
	wantCode(t, s.DeleteRelease(ctx, r.ID), fota.ECONFLICT)
	must(t, s.SetSessionState(ctx, "s1", fota.SessionFailed, "test"))
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
	must(t, s.DeviceSeen(ctx, d.ID, "1.0.4", c.Now()))
	must(t, s.DeviceSeen(ctx, d.ID, "", c.Now()))
	got, _ = s.Device(ctx, d.ID)
	if got.Version != "1.0.4" || !got.LastSeen.Equal(c.Now()) {
		t.Fatalf("after seen: %+v", got)
	}
	wantCode(t, s.DeviceSeen(ctx, "nobody", "", c.Now()), fota.ENOTFOUND)

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
		must(t, s.OpenSession(ctx, sess, 0))
		return sess
	}
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
	must(t, s.SetSessionState(ctx, "s2", fota.SessionDownloaded, ""))
	must(t, s.SetSessionState(ctx, "s2", fota.SessionRolledBack, "self-test failed"))
	wantCode(t, s.SetSessionState(ctx, "s2", fota.SessionConfirmed, ""), fota.EGONE)
	wantCode(t, s.SetSessionState(ctx, "s2", "exploded", ""), fota.EINVALID)
	_, err = s.ActiveSession(ctx, "d1")
	wantCode(t, err, fota.ENOTFOUND)
	rejected, err := s.RejectedReleases(ctx, "d1")
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
		err := s.OpenSession(ctx, &fota.Session{ID: "s" + id, DeviceID: id, ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 3}, 2)
		if i < 2 {
			must(t, err)
		} else {
			wantCode(t, err, fota.EUNAVAILABLE)
		}
	}
	// A device replacing its own session does not need a free place.
	must(t, s.OpenSession(ctx, &fota.Session{ID: "s-d0-again", DeviceID: "d0", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 3}, 2))
}

func testStaleSessions(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	must(t, s.CreateDevice(ctx, NewDevice("idle")))
	must(t, s.CreateDevice(ctx, NewDevice("busy")))
	must(t, s.OpenSession(ctx, &fota.Session{ID: "old", DeviceID: "idle", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 3}, 1))
	c.Advance(25 * time.Hour)
	must(t, s.OpenSession(ctx, &fota.Session{ID: "new", DeviceID: "busy", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 3}, 1))
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
	must(t, s.OpenSession(ctx, &fota.Session{ID: "s1", DeviceID: "d1", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 3}, 0))
	for _, st := range []string{fota.SessionDownloaded, fota.SessionVerified, fota.SessionApplied, fota.SessionConfirmed} {
		must(t, s.SetSessionState(ctx, "s1", st, ""))
	}
	d, _ := s.Device(ctx, "d1")
	if d.Version != "1.0.4" || d.SecurityCounter != 5 {
		t.Fatalf("confirmed device: %+v", d)
	}
}

func testConcurrentProgress(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	r := NewRelease("esp32", "1.0.4")
	must(t, s.CreateRelease(ctx, r))
	must(t, s.CreateDevice(ctx, NewDevice("d1")))
	must(t, s.OpenSession(ctx, &fota.Session{ID: "s1", DeviceID: "d1", ReleaseID: r.ID, ReleaseVersion: r.Version, API: fota.APINative, TotalChunks: 100}, 0))
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
