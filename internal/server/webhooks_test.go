package server

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

func TestWebhookAdminAPI(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const secret = "0123456789abcdef-webhook-secret"
	wh, err := e.admin.CreateWebhook(ctx, "https://hooks.example.com/fota", []string{"rollout.*,device.rolled_back"}, secret)
	if err != nil {
		t.Fatal(err)
	}
	if wh.ID == 0 || fmt.Sprint(wh.Events) != "[rollout.* device.rolled_back]" || wh.Created.IsZero() {
		t.Fatalf("created %+v", wh)
	}
	status, body := e.call("POST", "/v1/admin/webhooks", `{"url":"http://127.0.0.1:9/x","events":["*"],"secret":"another-secret-0123456789"}`, e.adminHeader())
	wantStatus(t, status, body, 201, "")
	if _, ok := body["secret"]; ok || strings.Contains(fmt.Sprint(body), "another-secret") {
		t.Fatalf("the answer shows the secret: %v", body)
	}
	for _, tc := range []struct{ body, msg string }{
		{`{"url":"https://example.com/","events":["*"],"secret":"short"}`, "at least 16"},
		{`{"url":"https://example.com/","events":["device.rollback"],"secret":"` + secret + `"}`, "matches no event; the events are: rollout.created"},
		{`{"url":"ftp://example.com/","events":["*"],"secret":"` + secret + `"}`, "http:// or https://"},
		{`{"url":"https://example.com/","events":"*","secret":"` + secret + `"}`, `field "events" must be`},
		{`{"url":"https://example.com/","events":["*"],"secrets":"` + secret + `"}`, "unknown field"},
	} {
		status, body := e.call("POST", "/v1/admin/webhooks", tc.body, e.adminHeader())
		wantStatus(t, status, body, 400, tc.msg)
	}
	list, err := e.admin.Webhooks(ctx)
	if err != nil || len(list) != 2 || list[0].ID != wh.ID || list[0].URL != "https://hooks.example.com/fota" {
		t.Fatalf("list %+v, %v", list, err)
	}
	if ds, err := e.admin.WebhookDeliveries(ctx, wh.ID, 10); err != nil || len(ds) != 0 {
		t.Fatalf("deliveries %+v, %v", ds, err)
	}
	status, body = e.call("GET", "/v1/admin/webhooks/999/deliveries", "", e.adminHeader())
	wantStatus(t, status, body, 404, "no webhook 999")
	status, body = e.call("GET", "/v1/admin/webhooks/abc/deliveries", "", e.adminHeader())
	wantStatus(t, status, body, 400, "want the number")
	status, body = e.call("GET", fmt.Sprintf("/v1/admin/webhooks/%d/deliveries?limit=0", wh.ID), "", e.adminHeader())
	wantStatus(t, status, body, 400, "want 1 to 1000")

	// A read token reads them; only admin changes them.
	tok, err := e.admin.CreateToken(ctx, "dash", "read", 0)
	if err != nil {
		t.Fatal(err)
	}
	reader, _ := client.NewAdmin(e.http.URL, tok.Text)
	if _, err := reader.Webhooks(ctx); err != nil {
		t.Fatalf("a read token listing webhooks: %v", err)
	}
	if _, err := reader.WebhookDeliveries(ctx, wh.ID, 0); err != nil {
		t.Fatalf("a read token listing deliveries: %v", err)
	}
	if _, err := reader.CreateWebhook(ctx, "https://evil.example.com/", []string{"*"}, secret); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("a read token adding a webhook: %v", err)
	}
	if err := reader.RemoveWebhook(ctx, wh.ID); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("a read token removing a webhook: %v", err)
	}

	if err := e.admin.RemoveWebhook(ctx, wh.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.RemoveWebhook(ctx, wh.ID); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("removing it again: %v", err)
	}
	evs, _ := e.admin.Events(ctx, "", 10)
	if evs[0].Kind != "webhook-removed" || evs[0].Actor != "token:test" {
		t.Fatalf("newest event %+v", evs[0])
	}
	for _, text := range []string{e.logs.String(), fmt.Sprint(evs)} {
		if strings.Contains(text, secret) || strings.Contains(text, "another-secret") {
			t.Fatalf("a secret shows in %s", text)
		}
	}
}

// SessionChanged is called on each session state change: fota serve
// wakes the webhook dispatcher with it.
func TestSessionChangedHook(t *testing.T) {
	e := newEnv(t)
	var changes atomic.Int32
	srv, err := New(Config{Store: e.store, Blobs: e.blobs, Trusted: []*keys.PublicKey{e.signer.Public()}, Now: e.now,
		SessionChanged: func() { changes.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer func() { hs.Close(); srv.Close() }()
	e.publish("1.0.4", 2000)
	psk := e.addDevice("d1", "1.0.3")
	d, _ := client.NewDevice(hs.URL, "d1", psk)
	d.Now = e.now
	ctx := context.Background()
	r, err := d.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
	if err != nil || !r.Update {
		t.Fatalf("check: %+v %v", r, err)
	}
	if err := d.Report(ctx, r.SessionID, "failed", "test"); err != nil {
		t.Fatal(err)
	}
	if changes.Load() != 1 {
		t.Fatalf("SessionChanged called %d times for one state change", changes.Load())
	}
}
