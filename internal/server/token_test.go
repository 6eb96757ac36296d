package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/protocol"
)

// Tokens have scopes, expire, and are revoked at once; each admin change
// names the token behind it.
func TestScopedTokens(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	texts := map[*client.Admin]string{}
	mk := func(name, scope string, expires time.Duration) *client.Admin {
		t.Helper()
		tok, err := e.admin.CreateToken(ctx, name, scope, expires)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tok.Text, TokenPrefix) {
			t.Fatalf("created token %+v", tok)
		}
		a, err := client.NewAdmin(e.http.URL, tok.Text)
		if err != nil {
			t.Fatal(err)
		}
		texts[a] = tok.Text
		return a
	}
	bearer := func(a *client.Admin) map[string]string {
		return map[string]string{"Authorization": "Bearer " + texts[a]}
	}

	prom := mk("prom", "metrics", 0)
	reader := mk("dash", "read", 0)
	ci := mk("ci", "admin", time.Hour)

	// metrics: /metrics only.
	status, body := e.call("GET", "/metrics", "", bearer(prom))
	if status != 200 {
		t.Fatalf("/metrics with a metrics token: %d %v", status, body)
	}
	if _, err := prom.Devices(ctx); err == nil || !strings.Contains(err.Error(), `has scope metrics; this needs read`) {
		t.Fatalf("device list with a metrics token: %v", err)
	}
	// read: reads, not changes.
	if _, err := reader.Devices(ctx); err != nil {
		t.Fatal(err)
	}
	if status, body := e.call("GET", "/metrics", "", bearer(reader)); status != 200 {
		t.Fatalf("/metrics with a read token: %d %v", status, body)
	}
	if err := reader.SetAPI(ctx, "nobody", "both"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("a change with a read token: %v", err)
	}
	if _, err := reader.CreateToken(ctx, "sneaky", "admin", 0); err == nil {
		t.Fatal("a read token made a token")
	}
	if _, err := reader.Tokens(ctx); err == nil {
		t.Fatal("a read token listed the tokens")
	}
	// admin: changes, recorded with the token's name.
	e.publish("1.0.4", 2000)
	e.addDevice("d1", "1.0.3")
	if err := ci.SetAPI(ctx, "d1", "native"); err != nil {
		t.Fatal(err)
	}
	evs, _ := e.admin.Events(ctx, "d1", 10)
	if evs[0].Kind != "api-policy" || evs[0].Actor != "token:ci" {
		t.Fatalf("newest event %+v, want api-policy by token:ci", evs[0])
	}
	// Revoked: refused from the next request on.
	if err := e.admin.RevokeToken(ctx, "dash"); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Devices(ctx); err == nil || !strings.Contains(err.Error(), `token "dash" was revoked`) {
		t.Fatalf("a revoked token: %v", err)
	}
	// Expired: refused after its hour.
	e.advance(time.Hour + time.Second)
	if _, err := ci.Devices(ctx); err == nil || !strings.Contains(err.Error(), `token "ci" expired`) {
		t.Fatalf("an expired token: %v", err)
	}
	ts, err := e.admin.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := ""
	for _, tk := range ts {
		names += tk.Name + " "
		if tk.Text != "" {
			t.Fatal("token list shows a token's text")
		}
	}
	for _, want := range []string{"ci", "dash", "prom"} {
		if !strings.Contains(names, want+" ") {
			t.Fatalf("token list %q lacks %s", names, want)
		}
	}
	if _, err := e.admin.CreateToken(ctx, "prom", "metrics", 0); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Fatalf("a second token named prom: %v", err)
	}
}

// Text that reaches operators' terminals is plain: no line breaks or escape
// sequences in report reasons or token names, and no wrapped expiry.
func TestNoForgedLinesInTheAuditTrail(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, body := range []string{
		`{"name":"x\ny","scope":"admin"}`,
		`{"name":"..","scope":"admin"}`,
		`{"name":"ok","expires_in":9223372036854775807}`,
	} {
		status, resp := e.call("POST", "/v1/admin/tokens", body, e.adminHeader())
		wantStatus(t, status, resp, 400, "")
	}
	e.publish("1.0.4", 2000)
	psk := e.addDeviceAPI("d1", "1.0.3", "native")
	d := e.device("d1", psk)
	r, err := d.Check(ctx, protocolCheck("1.0.3"))
	if err != nil {
		t.Fatal(err)
	}
	err = d.Report(ctx, r.SessionID, "failed", "x\r\n2026-12-02 07:20:00  confirmed  d1  1.0.4  token:admin  all good\u001b[8m")
	if err == nil || !strings.Contains(err.Error(), "plain text") {
		t.Fatalf("a reason with control characters: %v", err)
	}
}

func protocolCheck(version string) protocol.CheckRequest {
	return protocol.CheckRequest{Version: version, Hardware: "esp32"}
}
