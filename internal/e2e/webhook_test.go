package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestWebhookFromServe: fota serve sends an event to a webhook added with
// the CLI. The receiver checks it as docs/OPERATIONS.md says, with the
// standard library alone.
func TestWebhookFromServe(t *testing.T) {
	dir := t.TempDir()
	fota(t, dir, nil, "keys", "init", "--dir", "keys")
	const secret = "e2e-webhook-secret-0123456789"
	os.WriteFile(filepath.Join(dir, "hook.secret"), []byte(secret+"\n"), 0o600)
	got := make(chan map[string]any, 10)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts := r.Header.Get("X-Fota-Timestamp")
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(ts + "."))
		m.Write(body)
		if want := "sha256=" + hex.EncodeToString(m.Sum(nil)); !hmac.Equal([]byte(r.Header.Get("X-Fota-Signature")), []byte(want)) {
			t.Errorf("signature %q, want %q", r.Header.Get("X-Fota-Signature"), want)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if sec, err := strconv.ParseInt(ts, 10, 64); err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
			t.Errorf("timestamp %q is not now", ts)
		}
		var ev map[string]any
		if err := json.Unmarshal(body, &ev); err != nil || ev["id"] != r.Header.Get("X-Fota-Delivery") || ev["event"] != r.Header.Get("X-Fota-Event") ||
			r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("delivery with headers %v: %s", r.Header, body)
		}
		got <- ev
	}))
	defer recv.Close()

	srv := startServer(t, dir)
	env := []string{"FOTA_SERVER=" + srv.url, "FOTA_TOKEN=" + srv.token}
	fota(t, dir, env, "webhook", "add", "--url", recv.URL+"/hook", "--events", "device.*", "--secret-file", "hook.secret")
	fota(t, dir, env, "device", "add", "--id", "d1", "--hardware", "esp32", "--version", "1.0.3", "--credentials", "d1.json")
	select {
	case ev := <-got:
		if ev["event"] != "device.device_added" || ev["device_id"] != "d1" || ev["actor"] == "" {
			t.Fatalf("received %v", ev)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no delivery within 20 s")
	}
	srv.stop(t)
}
