package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/internal/update"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

// replica is a second server on e's store and clock, with the session and
// key cache TTL replicas sharing a database use.
func (e *env) replica() *httptest.Server {
	e.t.Helper()
	srv, err := New(Config{Store: e.store, Blobs: e.blobs, Trusted: []*keys.PublicKey{e.signer.Public()},
		Logger: slog.New(slog.DiscardHandler), Now: e.now, SessionCacheTTL: DefaultSessionCacheTTL})
	if err != nil {
		e.t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	e.t.Cleanup(func() { hs.Close(); srv.Close() })
	return hs
}

func wantAPIError(t *testing.T, err error, status int, msg string) {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != status || !strings.Contains(ae.Message, msg) {
		t.Fatalf("error %v, want %d saying %q", err, status, msg)
	}
}

// A removed device's sessions end and its key stops working: at once on
// the server that removed it, and on another replica once its cached key
// expires (a second), though it worked there a moment before. Its history
// stays, and its id is not registered again.
func TestRemoveDevice(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.publish("1.0.4", 3000)
	psk, d, offer := e.offered("d1")
	other, err := client.NewDevice(e.replica().URL, "d1", psk)
	if err != nil {
		t.Fatal(err)
	}
	other.Now = e.now
	if _, err := other.Check(ctx, protocol.CheckRequest{Version: "1.0.3"}); err != nil {
		t.Fatalf("check on the replica before removal: %v", err)
	}

	ended, err := e.admin.RemoveDevice(ctx, "d1")
	if err != nil || ended != 1 {
		t.Fatalf("remove: %d sessions ended, %v", ended, err)
	}
	_, err = d.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
	wantAPIError(t, err, 401, "unknown device or wrong signature")
	e.advance(DefaultSessionCacheTTL + time.Millisecond)
	_, err = other.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
	wantAPIError(t, err, 401, "unknown device or wrong signature")
	sess, _ := e.store.Session(ctx, offer.SessionID)
	if sess.State != fota.SessionAbandoned {
		t.Fatalf("session of a removed device: %s", sess.State)
	}
	// The EcoWatt API does not know it either.
	status, body := e.call("POST", "/ota/check", `{"device_id":"d1","current_version":"1.0.3"}`, nil)
	if status != 404 {
		t.Fatalf("/ota/check of a removed device: %d %v", status, body)
	}

	detail, err := e.admin.Device(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if detail.Device.Removed.IsZero() || detail.History[0].Kind != fota.EventDeviceRemoved {
		t.Fatalf("removed device reads back %+v, newest event %+v", detail.Device, detail.History[0])
	}
	if devs, _ := e.admin.Devices(ctx); len(devs) != 0 {
		t.Fatalf("device list after removal: %+v", devs)
	}
	_, err = e.admin.AddDevice(ctx, protocol.AddDevice{ID: "d1", Hardware: "esp32", Version: "1.0.3"})
	wantAPIError(t, err, 409, "was removed")
	_, err = e.admin.RemoveDevice(ctx, "d1")
	wantAPIError(t, err, 404, "unknown device")
}

// A withdrawn release is offered no more, the session downloading it ends
// with 410 and the reason, and the release stays listed, withdrawn.
func TestWithdrawRelease(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.publish("1.0.4", 3000)
	e.publish("1.0.5", 3000)
	_, d, offer := e.offered("d1")
	if offer.Version != "1.0.5" {
		t.Fatalf("offered %s, want 1.0.5", offer.Version)
	}
	download(t, d, offer, 0, 1, nil)

	w, err := e.admin.WithdrawRelease(ctx, "esp32", "1.0.5", "inverter link drops")
	if err != nil {
		t.Fatal(err)
	}
	if w.SessionsEnded != 1 || w.Release.Withdrawn.IsZero() {
		t.Fatalf("withdraw answered %+v", w)
	}
	err = d.Chunks(ctx, offer.SessionID, protocol.PreferredChunkMAC(offer.ChunkMACs), 1, 1, offer.ChunkSize, func(protocol.Frame) error { return nil })
	wantAPIError(t, err, 410, "release 1.0.5 was withdrawn: inverter link drops")
	// Its rollout ended with it, and the device is told why.
	again, err := d.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
	if err != nil || again.Update || !strings.Contains(again.Message, "aborted: release withdrawn: inverter link drops") {
		t.Fatalf("check after the withdrawal: %+v %v", again, err)
	}
	rels, _ := e.admin.Releases(ctx)
	if len(rels) != 2 || rels[1].Version != "1.0.5" || rels[1].Withdrawn.IsZero() {
		t.Fatalf("releases after a withdrawal: %+v", rels)
	}
	_, err = e.admin.WithdrawRelease(ctx, "esp32", "1.0.5", "")
	wantAPIError(t, err, 409, "withdrawn already")
	_, err = e.admin.WithdrawRelease(ctx, "esp32", "1.0.5", strings.Repeat("x", 201))
	wantAPIError(t, err, 400, "at most 200")
	evs, _ := e.admin.Events(ctx, "", 100)
	recorded := false
	for _, ev := range evs {
		recorded = recorded || ev.Kind == fota.EventWithdrawn && ev.Version == "1.0.5" && strings.Contains(ev.Detail, "inverter link drops")
	}
	if !recorded {
		t.Fatalf("no %s event in %+v", fota.EventWithdrawn, evs)
	}
	// Its sessions are over, so it can be deleted outright too.
	if err := e.admin.DeleteRelease(ctx, "esp32", "1.0.5"); err != nil {
		t.Fatal(err)
	}
}

// The server prunes in the background by its clock, and Close stops it.
func TestServerPrunesHistory(t *testing.T) {
	e := newEnv(t)
	e.publish("1.0.4", 3000)
	for i := range 3 {
		e.addDevice("d"+string(rune('a'+i)), "1.0.3")
	}
	srv, err := New(Config{Store: e.store, Blobs: e.blobs, Trusted: []*keys.PublicKey{e.signer.Public()}, Now: e.now,
		Retention: update.Retention{Events: time.Hour}, PruneEvery: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	e.advance(2 * time.Hour)
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, err := e.store.Events(context.Background(), fota.EventFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events older than the hour left after 10 s", len(evs))
		}
		time.Sleep(time.Millisecond) // polling
	}
	srv.Close()
}
