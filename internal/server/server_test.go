package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/internal/blobdir"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/logbuf"
	"github.com/ecowatt/fota/internal/sqlite"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

// env is a running server on real SQLite in a temp dir, with keys.
type env struct {
	t       testing.TB
	dir     string
	store   *sqlite.Store
	blobs   *blobdir.Dir
	srv     *Server
	http    *httptest.Server
	signer  *keys.SigningKey
	fwKey   keys.FirmwareKey
	token   string
	admin   *client.Admin
	logs    *logbuf.Buffer
	clock   time.Time
	clockMu sync.Mutex
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), logs: &logbuf.Buffer{}, clock: time.Now()}
	var err error
	e.signer, err = keys.Generate(keys.AlgRSA, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e.fwKey, _ = keys.NewFirmwareKey(rand.Reader)
	e.start()
	e.token = TokenPrefix + "test-token-0123456789"
	if err := e.store.CreateToken(context.Background(), &fota.Token{Name: "test", Hash: HashToken(e.token)}); err != nil {
		t.Fatal(err)
	}
	e.admin, _ = client.NewAdmin(e.http.URL, e.token)
	return e
}

// metricsText is /metrics as the admin sees it.
func (e *env) metricsText() string {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.http.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return string(raw)
}

func (e *env) now() time.Time { e.clockMu.Lock(); defer e.clockMu.Unlock(); return e.clock }

func (e *env) advance(d time.Duration) {
	e.clockMu.Lock()
	e.clock = e.clock.Add(d)
	e.clockMu.Unlock()
}

// start opens the store and blobs in e.dir and serves them.
func (e *env) start() {
	t := e.t
	var err error
	e.store, err = sqlite.Open(context.Background(), filepath.Join(e.dir, "fota.db"))
	if err != nil {
		t.Fatal(err)
	}
	e.blobs, err = blobdir.New(filepath.Join(e.dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	e.srv, err = New(Config{Store: e.store, Blobs: e.blobs, Trusted: []*keys.PublicKey{e.signer.Public()},
		Logger: slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})), MaxSessions: 1000, Now: e.now,
		// As fota serve runs on SQLite: the only writer, trusting its snapshots.
		SessionCacheTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e.http = httptest.NewServer(e.srv)
	t.Cleanup(e.stop)
}

func (e *env) stop() {
	if e.http == nil {
		return
	}
	e.http.Close()
	e.srv.Close()
	e.blobs.Close()
	e.store.Close()
	e.http = nil
}

// restart stops the server and starts a new one on the same data.
func (e *env) restart() {
	url := e.http.URL
	e.stop()
	e.start()
	e.admin, _ = client.NewAdmin(e.http.URL, e.token)
	_ = url
}

type built struct {
	firmware []byte
	bundle   []byte
}

func (e *env) build(version string, signer *keys.SigningKey, size int) built {
	e.t.Helper()
	fw, err := firmware.Sample(firmware.SampleOptions{Version: version, Size: size})
	if err != nil {
		e.t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := bundle.Build(&out, bytes.NewReader(fw), bundle.BuildOptions{Product: "ecowatt", Hardware: "esp32", Version: version,
		Signer: signer, FirmwareKey: e.fwKey, TempDir: e.t.TempDir()}); err != nil {
		e.t.Fatal(err)
	}
	return built{fw, out.Bytes()}
}

func (e *env) publish(version string, size int) built {
	e.t.Helper()
	b := e.build(version, e.signer, size)
	if _, err := e.admin.PublishRollout(context.Background(), bytes.NewReader(b.bundle), "all"); err != nil {
		e.t.Fatalf("publish %s: %v", version, err)
	}
	return b
}

// addDevice registers a device that may use both APIs.
func (e *env) addDevice(id, version string) protocol.PSK {
	e.t.Helper()
	return e.addDeviceAPI(id, version, fota.APIBoth)
}

func (e *env) addDeviceAPI(id, version, api string) protocol.PSK {
	e.t.Helper()
	d, err := e.admin.AddDevice(context.Background(), protocol.AddDevice{ID: id, Hardware: "esp32", Version: version, API: api})
	if err != nil {
		e.t.Fatal(err)
	}
	psk, err := protocol.ParsePSK(d.PSK)
	if err != nil {
		e.t.Fatal(err)
	}
	return psk
}

// call makes a raw request and decodes the JSON answer into a map.
func (e *env) call(method, path, body string, header map[string]string) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.http.URL+path, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	json.Unmarshal(raw, &out)
	if out == nil {
		out = map[string]any{"raw": string(raw)}
	}
	return resp.StatusCode, out
}

func (e *env) adminHeader() map[string]string {
	return map[string]string{"Authorization": "Bearer " + e.token}
}

func wantStatus(t *testing.T, got int, body map[string]any, want int, msg string) {
	t.Helper()
	if got != want {
		t.Fatalf("status %d, want %d; body %v", got, want, body)
	}
	if msg != "" {
		if s, _ := body["error"].(string); !strings.Contains(s, msg) {
			t.Fatalf("error %q does not contain %q", body["error"], msg)
		}
	}
}

func TestPublish(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	good := e.build("1.0.4", e.signer, 10_000)
	rel, err := e.admin.Publish(ctx, bytes.NewReader(good.bundle))
	if err != nil {
		t.Fatal(err)
	}
	if rel.Version != "1.0.4" || !rel.LegacyAPI || rel.Chunks != 10 {
		t.Fatalf("published %+v", rel)
	}
	_, err = e.admin.Publish(ctx, bytes.NewReader(good.bundle))
	if ae, ok := err.(*client.APIError); !ok || ae.Status != 409 {
		t.Fatalf("duplicate publish: %v", err)
	}

	other, _ := keys.Generate(keys.AlgRSA, rand.Reader)
	untrusted := e.build("1.0.5", other, 10_000)
	corrupt := e.build("1.0.6", e.signer, 10_000)
	corrupt.bundle[len(corrupt.bundle)-3] ^= 1
	truncated := e.build("1.0.7", e.signer, 10_000)
	cases := []struct {
		name   string
		body   []byte
		status int
		msg    string
	}{
		{"untrusted key", untrusted.bundle, 400, "signed by an untrusted key"},
		{"corrupt ciphertext", corrupt.bundle, 400, "ciphertext sha256 mismatch"},
		{"truncated upload", truncated.bundle[:len(truncated.bundle)-500], 400, "truncated bundle"},
		{"trailing data", append(bytes.Clone(truncated.bundle), 1, 2, 3), 400, "data after the end"},
		{"not a bundle", []byte("hello"), 400, "truncated"},
		{"empty", nil, 400, "truncated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := e.call("POST", "/v1/admin/releases", string(c.body), e.adminHeader())
			wantStatus(t, status, body, c.status, c.msg)
		})
	}
	rels, _ := e.admin.Releases(ctx)
	if len(rels) != 1 {
		t.Fatalf("%d releases stored, want only the good one", len(rels))
	}
	keysLeft, _ := e.blobs.Keys(time.Now().Add(time.Hour))
	tmpLeft, _ := os.ReadDir(filepath.Join(e.dir, "blobs", "tmp"))
	if len(keysLeft) != 1 || len(tmpLeft) != 0 {
		t.Fatalf("blobs: %d committed, %d temporary; want 1 and 0", len(keysLeft), len(tmpLeft))
	}

	// Admin authentication.
	status, body := e.call("GET", "/v1/admin/releases", "", nil)
	wantStatus(t, status, body, 401, "Authorization")
	status, body = e.call("GET", "/v1/admin/releases", "", map[string]string{"Authorization": "Bearer fota_wrong"})
	wantStatus(t, status, body, 401, "not valid")
	status, body = e.call("POST", "/v1/admin/releases", string(good.bundle), map[string]string{"Authorization": "Basic abc"})
	wantStatus(t, status, body, 401, "")
}

func TestAddDevice(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	d, err := e.admin.AddDevice(ctx, protocol.AddDevice{ID: "ESP32_EcoWatt_Smart", Hardware: "esp32", Version: "1.0.3", API: fota.APIEcoWatt})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := protocol.ParsePSK(d.PSK); err != nil {
		t.Fatalf("PSK %q: %v", d.PSK, err)
	}
	list, _ := e.admin.Devices(ctx)
	if len(list) != 1 || list[0].PSK != "" {
		t.Fatalf("device list shows %+v (the PSK must be shown once only)", list)
	}
	_, err = e.admin.AddDevice(ctx, protocol.AddDevice{ID: "ESP32_EcoWatt_Smart", Hardware: "esp32", Version: "1.0.3"})
	if ae, ok := err.(*client.APIError); !ok || ae.Status != 409 {
		t.Fatalf("duplicate device: %v", err)
	}
	for _, bad := range []string{
		`{"id":"../../etc/passwd","hardware":"esp32","version":"1.0.0"}`,
		`{"id":"x'; DROP TABLE devices;--","hardware":"esp32","version":"1.0.0"}`,
		`{"id":"ok","hardware":"esp32/../x","version":"1.0.0"}`,
		`{"id":"ok","hardware":"esp32","version":"one"}`,
		`{"id":"ok","hardware":"esp32","version":"1.0.0","extra":1}`,
		`{"id":5}`,
		`not json`,
	} {
		status, body := e.call("POST", "/v1/admin/devices", bad, e.adminHeader())
		wantStatus(t, status, body, 400, "")
	}
	if list, _ := e.admin.Devices(ctx); len(list) != 1 {
		t.Fatalf("bad requests stored devices: %d", len(list))
	}
	status, body := e.call("POST", "/v1/admin/devices", `{"id":"`+strings.Repeat("a", 70000)+`"}`, e.adminHeader())
	wantStatus(t, status, body, 413, "larger than")
}

func TestDecisionOrderPinAndRejection(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// Each publish rolls out to every device, superseding the one before:
	// the newest rollout is 1.0.10's.
	for _, v := range []string{"1.0.9", "1.0.2", "1.0.10"} {
		e.publish(v, 2000)
	}
	psk := e.addDevice("d1", "1.0.3")
	dev, _ := client.NewDevice(e.http.URL, "d1", psk)
	dev.Now = e.now
	check := func(running string) *protocol.CheckResponse {
		t.Helper()
		resp, err := dev.Check(ctx, protocol.CheckRequest{Version: running})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if r := check("1.0.3"); r.Version != "1.0.10" {
		t.Fatalf("offered %q, want 1.0.10 (semantic order, not string order)", r.Version)
	}
	if r := check("1.0.10"); r.Update {
		t.Fatalf("offered %q to a device on the newest", r.Version)
	}
	// Running 1.0.10, a pin to 1.0.9 could never take effect.
	if err := e.admin.Pin(ctx, "d1", "1.0.9"); err == nil || !strings.Contains(err.Error(), "not newer") {
		t.Fatalf("pin below the running version: %v", err)
	}
	check("1.0.3")
	if err := e.admin.Pin(ctx, "d1", "1.0.9"); err != nil {
		t.Fatal(err)
	}
	if r := check("1.0.3"); r.Version != "1.0.9" {
		t.Fatalf("pinned device offered %q", r.Version)
	}
	if err := e.admin.Pin(ctx, "d1", "9.9.9"); err == nil {
		t.Fatal("pinning to an unpublished release was accepted")
	}
	if err := e.admin.Pin(ctx, "d1", ""); err != nil {
		t.Fatal(err)
	}
	r := check("1.0.3")
	if err := dev.Report(ctx, r.SessionID, "rolled-back", "self-test failed"); err != nil {
		t.Fatal(err)
	}
	// Its rollout is 1.0.10's: nothing else is offered until an operator
	// rolls out (or pins) another release.
	if r := check("1.0.3"); r.Update || !strings.Contains(r.Message, "rolled back from") {
		t.Fatalf("after rolling back 1.0.10 the device was offered %q (%s)", r.Version, r.Message)
	}
}

// decryptAll reassembles the ciphertext the way a device does and returns
// the plaintext: AES-256-CBC stream, PKCS#7.
func (e *env) decryptAll(t *testing.T, ct []byte, iv []byte) []byte {
	var plain bytes.Buffer
	d, err := bundle.NewDecrypter(&plain, e.fwKey, iv)
	if err != nil {
		t.Fatal(err)
	}
	d.Write(ct)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return plain.Bytes()
}

func TestLegacyAPIFullUpdate(t *testing.T) {
	e := newEnv(t)
	rel := e.publish("1.0.4", 5000)
	psk := e.addDeviceAPI("ESP32_EcoWatt_Smart", "1.0.3", fota.APIEcoWatt)

	status, check := e.call("POST", "/ota/check", `{"device_id":"ESP32_EcoWatt_Smart","current_version":"1.0.3"}`, nil)
	wantStatus(t, status, check, 200, "")
	if check["update_available"] != true || check["version"] != "1.0.4" || check["chunk_size"] != 1024.0 {
		t.Fatalf("check: %v", check)
	}
	total := int(check["total_chunks"].(float64))
	var ct []byte
	for i := 0; i < total; i++ {
		status, resp := e.call("POST", "/ota/chunk", fmt.Sprintf(`{"device_id":"ESP32_EcoWatt_Smart","version":"1.0.4","chunk_number":%d}`, i), nil)
		wantStatus(t, status, resp, 200, "")
		chunk := resp["chunk"].(map[string]any)
		data, _ := base64.StdEncoding.DecodeString(chunk["data"].(string))
		mac := protocol.LegacyChunkMAC(psk, i, data)
		if chunk["hmac"] != hex.EncodeToString(mac[:]) || int(chunk["size"].(float64)) != len(data) {
			t.Fatalf("chunk %d: bad hmac or size", i)
		}
		progress := resp["progress"].(map[string]any)
		if int(progress["chunks_received"].(float64)) != i+1 {
			t.Fatalf("progress %v", progress)
		}
		ct = append(ct, data...)
	}
	if int64(len(ct)) != int64(check["encrypted_size"].(float64)) {
		t.Fatalf("got %d ciphertext bytes, check said %v", len(ct), check["encrypted_size"])
	}
	iv, _ := base64.StdEncoding.DecodeString(check["iv"].(string))
	plain := e.decryptAll(t, ct, iv)
	sum := sha256.Sum256(plain)
	if !bytes.Equal(plain, rel.firmware) || hex.EncodeToString(sum[:]) != check["sha256_hash"] {
		t.Fatal("decrypted firmware differs")
	}
	sig, _ := base64.StdEncoding.DecodeString(check["signature"].(string))
	if err := e.signer.Public().VerifyDigest(sum, sig); err != nil {
		t.Fatalf("legacy signature: %v", err)
	}

	status, resp := e.call("POST", "/ota/verify", `{"device_id":"ESP32_EcoWatt_Smart","verified":true,"version":"1.0.4"}`, nil)
	wantStatus(t, status, resp, 200, "")
	status, resp = e.call("POST", "/ota/complete", `{"device_id":"ESP32_EcoWatt_Smart","version":"1.0.4","boot_status":"success"}`, nil)
	wantStatus(t, status, resp, 200, "")
	d, _ := e.admin.Device(context.Background(), "ESP32_EcoWatt_Smart")
	if d.Device.Version != "1.0.4" {
		t.Fatalf("device version after confirm: %s", d.Device.Version)
	}
	kinds := map[string]bool{}
	for _, ev := range d.History {
		kinds[ev.Kind] = true
	}
	for _, k := range []string{fota.EventSessionOpened, fota.EventProgress, fota.EventVerified, fota.EventConfirmed} {
		if !kinds[k] {
			t.Errorf("history lacks %s: %+v", k, d.History)
		}
	}
	// After completing, the session is closed: chunks are refused.
	status, resp = e.call("POST", "/ota/chunk", `{"device_id":"ESP32_EcoWatt_Smart","version":"1.0.4","chunk_number":0}`, nil)
	wantStatus(t, status, resp, 404, "no open update session")
}

func TestLegacyAPIBadInput(t *testing.T) {
	e := newEnv(t)
	e.publish("1.0.4", 5000)
	e.addDevice("dev1", "1.0.3")
	status, body := e.call("POST", "/ota/chunk", `{"device_id":"dev1","version":"1.0.4","chunk_number":0}`, nil)
	wantStatus(t, status, body, 404, "check for updates first")
	e.call("POST", "/ota/check", `{"device_id":"dev1","current_version":"1.0.3"}`, nil)

	cases := []struct {
		path, body string
		status     int
		msg        string
	}{
		{"/ota/check", `{"device_id":"dev1"`, 400, "not valid JSON"},
		{"/ota/check", ``, 400, "empty"},
		{"/ota/check", `[1,2]`, 400, ""},
		{"/ota/check", `{"device_id":"dev1"}`, 400, `missing field "current_version"`},
		{"/ota/check", `{"current_version":"1.0.3"}`, 400, `missing field "device_id"`},
		{"/ota/check", `{"device_id":7,"current_version":"1.0.3"}`, 400, `"device_id" must be a string`},
		{"/ota/check", `{"device_id":"dev1","current_version":"v1"}`, 400, "not a semantic version"},
		{"/ota/check", `{"device_id":"nobody","current_version":"1.0.3"}`, 404, "unknown device"},
		{"/ota/check", `{"device_id":"../../etc","current_version":"1.0.3"}`, 400, "device_id must be"},
		{"/ota/check", `{"device_id":"' OR 1=1 --","current_version":"1.0.3"}`, 400, "device_id must be"},
		{"/ota/check", `{"device_id":"dev1","current_version":"1.0.3","x":1}`, 400, "unknown field"},
		{"/ota/check", `{"device_id":"dev1","current_version":"1.0.3"} {}`, 400, "data after its JSON object"},
		{"/ota/check", `{"device_id":"dev1","current_version":"1.0.3"}}`, 400, "data after its JSON object"},
		{"/ota/check", `{"device_id":"dev1","current_version":"1.0.3"}]`, 400, "data after its JSON object"},
		{"/ota/check", `{"device_id":"nobody","device_id":"dev1","current_version":"1.0.3"}`, 400, `the key "device_id" twice`},
		{"/ota/check", `{"DEVICE_ID":"dev1","current_version":"1.0.3"}`, 400, `unknown field "DEVICE_ID" (keys are case-sensitive)`},
		{"/ota/check", `{"device_id":"dev1","Current_Version":"1.0.3"}`, 400, `unknown field "Current_Version"`},
		{"/ota/chunk", `{"device_id":"dev1","version":"1.0.4","chunk_number":"5"}`, 400, `"chunk_number" must be a int64, not a JSON string`},
		{"/ota/chunk", `{"device_id":"dev1","version":"1.0.4","chunk_number":1.5}`, 400, "chunk_number"},
		{"/ota/chunk", `{"device_id":"dev1","version":"1.0.4","chunk_number":-1}`, 400, "out of range"},
		{"/ota/chunk", `{"device_id":"dev1","version":"1.0.4","chunk_number":5}`, 400, "out of range"},
		{"/ota/chunk", `{"device_id":"dev1","version":"1.0.4","chunk_number":99999999999999}`, 400, "out of range"},
		{"/ota/chunk", `{"device_id":"dev1","version":"1.0.4"}`, 400, `missing field "chunk_number"`},
		{"/ota/chunk", `{"device_id":"dev1","version":"1.0.5","chunk_number":0}`, 400, "not 1.0.5"},
		{"/ota/chunk", `{"device_id":"nobody","version":"1.0.4","chunk_number":0}`, 404, "unknown device"},
		{"/ota/verify", `{"device_id":"dev1","version":"1.0.4"}`, 400, `missing field "verified"`},
		{"/ota/verify", `{"device_id":"dev1","verified":"yes","version":"1.0.4"}`, 400, `"verified" must be a bool`},
		{"/ota/complete", `{"device_id":"dev1","version":"1.0.4","boot_status":"meh"}`, 400, "boot_status"},
		{"/ota/complete", `{"device_id":"dev1","version":"1.0.4"}`, 400, `missing field "boot_status"`},
		{"/ota/check", `{"device_id":"` + strings.Repeat("x", 20000) + `","current_version":"1.0.3"}`, 413, "larger than"},
	}
	for _, c := range cases {
		status, body := e.call("POST", c.path, c.body, nil)
		if status != c.status || !strings.Contains(fmt.Sprint(body["error"]), c.msg) {
			t.Errorf("POST %s %.60s: %d %v; want %d containing %q", c.path, c.body, status, body, c.status, c.msg)
		}
		if status >= 500 {
			t.Errorf("client mistake answered with %d", status)
		}
	}
	// Nothing above changed the session.
	status, body = e.call("GET", "/ota/status", "", e.adminHeader())
	wantStatus(t, status, body, 200, "")
	if body["active_sessions"] != 1.0 {
		t.Fatalf("status: %v", body)
	}
	// The original firmware's diagnostics call it without a token: 200, and
	// nothing about any device.
	status, body = e.call("GET", "/ota/status", "", nil)
	wantStatus(t, status, body, 200, "")
	if body["status"] != "ok" || body["sessions"] != nil || body["active_sessions"] != nil {
		t.Fatalf("tokenless /ota/status says more than ok: %v", body)
	}
	status, body = e.call("GET", "/ota/status", "", map[string]string{"Authorization": "Bearer fota_wrong"})
	wantStatus(t, status, body, 401, "")
	// Chunk 4 is the last; asking far ahead of progress is refused on big releases (checked below).
	status, body = e.call("POST", "/ota/chunk", `{"device_id":"dev1","version":"1.0.4","chunk_number":4}`, nil)
	wantStatus(t, status, body, 200, "")
}

func TestLegacyFarOutOfSequence(t *testing.T) {
	e := newEnv(t)
	e.publish("1.0.4", 200_000)
	e.addDevice("dev1", "1.0.3")
	e.call("POST", "/ota/check", `{"device_id":"dev1","current_version":"1.0.3"}`, nil)
	status, body := e.call("POST", "/ota/chunk", `{"device_id":"dev1","version":"1.0.4","chunk_number":150}`, nil)
	wantStatus(t, status, body, 400, "too far ahead")
}

func TestLegacyRefusesNonRSARelease(t *testing.T) {
	e := newEnv(t)
	ed, _ := keys.Generate(keys.AlgEd25519, rand.Reader)
	e.srv.trusted = append(e.srv.trusted, ed.Public())
	b := e.build("1.0.4", ed, 3000)
	if _, err := e.admin.PublishRollout(context.Background(), bytes.NewReader(b.bundle), "all"); err != nil {
		t.Fatal(err)
	}
	e.addDeviceAPI("dev1", "1.0.3", fota.APIEcoWatt)
	status, body := e.call("POST", "/ota/check", `{"device_id":"dev1","current_version":"1.0.3"}`, nil)
	wantStatus(t, status, body, 200, "")
	if body["update_available"] != false || !strings.Contains(body["message"].(string), "only on the native API") {
		t.Fatalf("check: %v", body)
	}
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

// A crash between committing a blob and recording its release leaves a
// blob no release refers to; the sweep at start removes it, and only it.
func TestSweepBlobsRemovesOrphans(t *testing.T) {
	e := newEnv(t)
	e.publish("1.0.4", 3000)
	tmp, err := e.blobs.Create()
	if err != nil {
		t.Fatal(err)
	}
	tmp.Write([]byte("orphan"))
	orphan := strings.Repeat("ab", 32)
	if err := tmp.Commit(orphan); err != nil {
		t.Fatal(err)
	}
	// A fresh blob may be another replica's publish in flight: left alone.
	if n, err := fota.SweepBlobs(context.Background(), e.store, e.blobs); err != nil || n != 0 {
		t.Fatalf("sweep removed %d fresh blobs, %v; want 0", n, err)
	}
	n, err := fota.SweepBlobsBefore(context.Background(), e.store, e.blobs, time.Now().Add(time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("sweep removed %d, %v; want 1", n, err)
	}
	left, _ := e.blobs.Keys(time.Now().Add(time.Hour))
	if len(left) != 1 || left[0] == orphan {
		t.Fatalf("blobs left: %v", left)
	}
}

// The hand-written /ota/chunk answer is exactly what encoding/json makes
// of the same values.
func TestLegacyChunkAnswerMatchesEncodingJSON(t *testing.T) {
	e := newEnv(t)
	e.publish("1.0.4", 2500)
	psk := e.addDevice("dev1", "1.0.3")
	e.call("POST", "/ota/check", `{"device_id":"dev1","current_version":"1.0.3"}`, nil)
	for i := 0; i < 3; i++ {
		req := httptest.NewRequest("POST", "/ota/chunk", strings.NewReader(fmt.Sprintf(`{"device_id":"dev1","version":"1.0.4","chunk_number":%d}`, i)))
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, req)
		var got legacyChunkAnswer
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatalf("chunk %d answer is not JSON: %v\n%s", i, err, w.Body)
		}
		want, _ := json.Marshal(got)
		if strings.TrimSpace(w.Body.String()) != string(want) {
			t.Fatalf("chunk %d:\n got %s\nwant %s", i, w.Body, want)
		}
		data, _ := base64.StdEncoding.DecodeString(got.Chunk.Data)
		if mac := protocol.LegacyChunkMAC(psk, i, data); hex.EncodeToString(mac[:]) != got.Chunk.HMAC || got.Chunk.Size != len(data) {
			t.Fatalf("chunk %d: HMAC or size wrong", i)
		}
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	e.publish("1.0.4", 3000)
	e.addDevice("dev1", "1.0.3")
	_, check := e.call("POST", "/ota/check", `{"device_id":"dev1","current_version":"1.0.3"}`, nil)
	if text := e.metricsText(); !strings.Contains(text, "\nfota_sessions_open 1\n") {
		t.Errorf("/metrics with a session open lacks fota_sessions_open 1")
	}
	for i := range 3 {
		e.call("POST", "/ota/chunk", fmt.Sprintf(`{"device_id":"dev1","version":"1.0.4","chunk_number":%d}`, i), nil)
	}
	status, body := e.call("POST", "/ota/complete", `{"device_id":"dev1","version":"1.0.4","boot_status":"success"}`, nil)
	wantStatus(t, status, body, 200, "")
	status, body = e.call("GET", "/metrics", "", nil)
	wantStatus(t, status, body, 401, "")
	text := e.metricsText()
	for _, want := range []string{
		`fota_http_requests_total{route="POST /ota/chunk",status="200"} 3`,
		fmt.Sprintf(`fota_chunk_bytes_total{api="ecowatt"} %v`, check["encrypted_size"]),
		`fota_updates_total{outcome="confirmed"} 1`,
		`fota_sessions_open 0`,
		`fota_http_request_duration_seconds_bucket{route="POST /ota/check"`,
		`fota_db_connections_open`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
