package web_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/password"
	"github.com/ecowatt/fota/internal/testserver"
)

// loadDevices inserts n devices straight into the test server's SQLite
// database in one transaction (CreateDevice's fsync each would take
// minutes): five versions, labels, and last seen spread over two days, so
// the fleet page has online and offline devices of every version.
func loadDevices(b *testing.B, srv *testserver.Server, n int) {
	b.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(srv.Dir, "fota.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	st, err := tx.Prepare(`INSERT INTO devices (id, hardware, version, security_counter, psk, created_ms, last_seen_ms, labels, api)
		VALUES (?, ?, ?, 0, ?, 1, ?, ?, 'native')`)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	psk := make([]byte, 32)
	versions := []string{"1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4"}
	for i := range n {
		hw := "esp32"
		if i%7 == 0 {
			hw = "esp32s3"
		}
		seen := now.Add(-time.Duration(i%48) * time.Hour).UnixMilli()
		labels := fmt.Sprintf(`{"ring":%q,"site":"plant-%d"}`, map[bool]string{true: "canary", false: "main"}[i%10 == 0], i%50)
		if _, err := st.Exec(fmt.Sprintf("fleet-%06d", i), hw, versions[i%len(versions)], psk, seen, labels); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkFleetPage renders the fleet page for 10,000 devices, in the
// server alone (no network, no browser): target under 200 ms. Its
// ns/op is the server time of one page.
func BenchmarkFleetPage(b *testing.B) {
	for _, path := range []string{"/fleet", "/fleet?labels=ring%3Dcanary", "/devices", "/devices?q=fleet-0099&labels=site%3Dplant-3"} {
		b.Run(strings.NewReplacer("/", "", "?", " ", "%3D", "=").Replace(path), func(b *testing.B) { benchPage(b, path) })
	}
}

func benchPage(b *testing.B, path string) {
	srv := testserver.New(b)
	loadDevices(b, srv, 10_000)
	hash, err := password.Hash(testPassword)
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Store.CreateUser(context.Background(), &fota.User{Name: "vic", Role: fota.RoleViewer, PasswordHash: hash}); err != nil {
		b.Fatal(err)
	}
	cookie := benchSignIn(b, srv.Handler, "vic")
	b.ResetTimer()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.AddCookie(cookie)
		rec := httptest.NewRecorder()
		srv.Handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%s: %d %s", path, rec.Code, rec.Body.String())
		}
	}
}

// benchSignIn signs in through the handler and returns the session cookie.
func benchSignIn(b *testing.B, h http.Handler, name string) *http.Cookie {
	b.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/signin", nil))
	form := rec.Result()
	var formCookie *http.Cookie
	for _, c := range form.Cookies() {
		if c.Name == "fota_signin" {
			formCookie = c
		}
	}
	if formCookie == nil {
		b.Fatal("no sign-in cookie")
	}
	body := url.Values{"csrf": {formCookie.Value}, "name": {name}, "password": {testPassword}}.Encode()
	req := httptest.NewRequest(http.MethodPost, "/signin", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(formCookie)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	for _, c := range rec.Result().Cookies() {
		if c.Name == "fota_session" {
			return c
		}
	}
	b.Fatalf("sign in: %d %s", rec.Code, rec.Body.String())
	return nil
}
