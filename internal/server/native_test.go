package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/protocol"
)

func (e *env) device(id string, psk protocol.PSK) *client.Device {
	d, err := client.NewDevice(e.http.URL, id, psk)
	if err != nil {
		e.t.Fatal(err)
	}
	d.Now = e.now
	return d
}

// download fetches a whole session's ciphertext through the native API,
// count chunks per request, resuming from `from`.
func download(t *testing.T, d *client.Device, r *protocol.CheckResponse, from, count int, into []byte) []byte {
	t.Helper()
	for i := from; i < r.Chunks; i += count {
		err := d.Chunks(context.Background(), r.SessionID, i, count, r.ChunkSize, func(f protocol.Frame) error {
			into = append(into, f.Data...)
			return nil
		})
		if err != nil {
			t.Fatalf("chunks from %d: %v", i, err)
		}
	}
	return into
}

func TestNativeFullUpdate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	rel := e.publish("1.0.4", 100_000)
	psk := e.addDevice("dev1", "1.0.3")
	d := e.device("dev1", psk)
	r, err := d.Check(ctx, protocol.CheckRequest{Version: "1.0.3", Hardware: "esp32"})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Update || r.Version != "1.0.4" || r.Chunks != 98 {
		t.Fatalf("check: %+v", r)
	}
	// The device verifies the signed manifest before downloading anything.
	manifestBytes, _ := base64.StdEncoding.DecodeString(r.Manifest)
	sig, _ := base64.StdEncoding.DecodeString(r.Signature)
	if err := e.signer.Public().Verify(manifestBytes, sig); err != nil {
		t.Fatalf("manifest signature: %v", err)
	}
	m, err := bundle.ParseManifest(manifestBytes)
	if err != nil {
		t.Fatal(err)
	}
	ct := download(t, d, r, 0, 16, nil)
	if sum := sha256.Sum256(ct); hex.EncodeToString(sum[:]) != m.CiphertextSHA256 {
		t.Fatal("ciphertext hash mismatch")
	}
	// All 98 chunks in one answer: two blocks of frames, the second ending
	// in the short last chunk.
	if whole := download(t, d, r, 0, r.Chunks, nil); !bytes.Equal(whole, ct) {
		t.Fatal("the ciphertext in one answer differs from it in answers of 16 chunks")
	}
	if plain := e.decryptAll(t, ct, m.IVBytes()); !bytes.Equal(plain, rel.firmware) {
		t.Fatal("firmware differs")
	}
	for _, st := range []string{"downloaded", "verified", "applied", "confirmed"} {
		if err := d.Report(ctx, r.SessionID, st, ""); err != nil {
			t.Fatalf("report %s: %v", st, err)
		}
	}
	info, _ := e.admin.Device(ctx, "dev1")
	if info.Device.Version != "1.0.4" {
		t.Fatalf("device version %s after confirm", info.Device.Version)
	}
	// The session is over.
	err = d.Chunks(ctx, r.SessionID, 0, 1, r.ChunkSize, func(protocol.Frame) error { return nil })
	if ae, ok := err.(*client.APIError); !ok || ae.Status != 410 {
		t.Fatalf("chunks after confirm: %v", err)
	}
	if r2, _ := d.Check(ctx, protocol.CheckRequest{Version: "1.0.4"}); r2.Update {
		t.Fatal("update offered again after confirm")
	}
}

func TestNativeMACsAndPayload(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.publish("1.0.4", 10_000)
	psk := e.addDevice("dev1", "1.0.3")
	d := e.device("dev1", psk)
	r, _ := d.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})

	// Payload: public, immutable, ETag, Range.
	resp, err := http.Get(e.http.URL + r.PayloadURL)
	if err != nil {
		t.Fatal(err)
	}
	ct, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != 200 || int64(len(ct)) != r.CiphertextSize || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") || etag == "" {
		t.Fatalf("payload: %d, %d bytes, %v", resp.StatusCode, len(ct), resp.Header)
	}
	req, _ := http.NewRequest("GET", e.http.URL+r.PayloadURL, nil)
	req.Header.Set("Range", "bytes=1024-2047")
	resp, _ = http.DefaultClient.Do(req)
	part, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || !bytes.Equal(part, ct[1024:2048]) {
		t.Fatalf("range: %d, %d bytes", resp.StatusCode, len(part))
	}
	req.Header.Del("Range")
	req.Header.Set("If-None-Match", etag)
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 304 {
		t.Fatalf("conditional GET: %d", resp.StatusCode)
	}
	if resp, _ := http.Get(e.http.URL + "/v1/payload/" + strings.Repeat("0", 64)); resp.StatusCode != 404 {
		t.Fatalf("unknown payload: %d", resp.StatusCode)
	}

	// MACs for every chunk of the payload, bound to this session.
	sreq, _ := http.NewRequest("GET", e.http.URL+r.MACsURL+"?from=0&count="+fmt.Sprint(r.Chunks), nil)
	protocol.SignRequest(sreq, "dev1", psk, nil, e.now())
	resp, _ = http.DefaultClient.Do(sreq)
	macs, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(macs) != 32*r.Chunks {
		t.Fatalf("macs: %d bytes for %d chunks (%s)", len(macs), r.Chunks, macs)
	}
	for i := 0; i < r.Chunks; i++ {
		chunk := ct[i*r.ChunkSize : min((i+1)*r.ChunkSize, len(ct))]
		want := protocol.ChunkMAC(psk, r.SessionID, i, chunk)
		if !bytes.Equal(macs[i*32:(i+1)*32], want[:]) {
			t.Fatalf("mac %d differs", i)
		}
	}
}

func TestNativeAuthentication(t *testing.T) {
	e := newEnv(t)
	e.publish("1.0.4", 3000)
	psk := e.addDevice("dev1", "1.0.3")
	otherPSK := e.addDevice("dev2", "1.0.3")
	body := []byte(`{"version":"1.0.3"}`)
	send := func(mutate func(req *http.Request)) (int, map[string]any) {
		req, _ := http.NewRequest("POST", e.http.URL+"/v1/device/check", bytes.NewReader(body))
		protocol.SignRequest(req, "dev1", psk, body, e.now())
		mutate(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, map[string]any{"error": string(raw)}
	}
	status, out := send(func(*http.Request) {})
	wantStatus(t, status, out, 200, "")

	var replay *http.Request
	cases := []struct {
		name   string
		mutate func(req *http.Request)
		msg    string
	}{
		{"no headers", func(r *http.Request) { r.Header.Del(protocol.HeaderSignature) }, "missing authentication headers"},
		{"wrong key", func(r *http.Request) { protocol.SignRequest(r, "dev1", otherPSK, body, e.now()) }, "wrong signature"},
		{"unknown device", func(r *http.Request) { protocol.SignRequest(r, "ghost", psk, body, e.now()) }, "unknown device"},
		{"stale", func(r *http.Request) { protocol.SignRequest(r, "dev1", psk, body, e.now().Add(-6*time.Minute)) }, "off the server clock"},
		{"future", func(r *http.Request) { protocol.SignRequest(r, "dev1", psk, body, e.now().Add(6*time.Minute)) }, "off the server clock"},
		{"body changed", func(r *http.Request) { r.Body = io.NopCloser(strings.NewReader(`{"version":"0.0.1"}`)) }, "wrong signature"},
		{"bad nonce", func(r *http.Request) { r.Header.Set(protocol.HeaderNonce, "short") }, "malformed"},
		{"bad signature hex", func(r *http.Request) { r.Header.Set(protocol.HeaderSignature, "zz") }, "malformed"},
		{"path device id", func(r *http.Request) { r.Header.Set(protocol.HeaderDevice, "../dev1") }, "malformed"},
		{"replayed", func(r *http.Request) {
			if replay == nil {
				replay = r.Clone(context.Background())
			}
			r.Header = replay.Header.Clone()
		}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, out := send(c.mutate)
			if c.name == "replayed" {
				wantStatus(t, status, out, 200, "")
				status, out = send(c.mutate)
				c.msg = "nonce already used"
			}
			wantStatus(t, status, out, 401, c.msg)
		})
	}
}

func TestNativeSessionIsolation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.publish("1.0.4", 3000)
	d1 := e.device("dev1", e.addDevice("dev1", "1.0.3"))
	d2 := e.device("dev2", e.addDevice("dev2", "1.0.3"))
	r1, _ := d1.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
	err := d2.Chunks(ctx, r1.SessionID, 0, 1, 1024, func(protocol.Frame) error { return nil })
	if ae, ok := err.(*client.APIError); !ok || ae.Status != 404 {
		t.Fatalf("another device's session: %v", err)
	}
	if err := d2.Report(ctx, r1.SessionID, "confirmed", ""); err == nil {
		t.Fatal("another device confirmed dev1's session")
	}
	if _, err := d1.Check(ctx, protocol.CheckRequest{Version: "1.0.3", Hardware: "esp32s3"}); err == nil {
		t.Fatal("hardware mismatch accepted")
	}
	if err := d1.Report(ctx, r1.SessionID, "exploded", ""); err == nil {
		t.Fatal("unknown status accepted")
	}
	for _, q := range []string{"from=-1", "from=x", "from=3", "from=0&count=0"} {
		req, _ := http.NewRequest("GET", e.http.URL+"/v1/device/sessions/"+r1.SessionID+"/chunks?"+q, nil)
		protocol.SignRequest(req, "dev1", mustPSK(t, e, "dev1"), nil, e.now())
		resp, _ := http.DefaultClient.Do(req)
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("chunks?%s: %d, want 400", q, resp.StatusCode)
		}
	}
	// Security counter: a device that stores a higher counter is not offered this release.
	r, _ := d1.Check(ctx, protocol.CheckRequest{Version: "1.0.3", SecurityCounter: 9})
	if r.Update || !strings.Contains(r.Message, "security counter") {
		t.Fatalf("check with higher counter: %+v", r)
	}
}

func mustPSK(t *testing.T, e *env, id string) protocol.PSK {
	d, err := e.store.Device(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d.PSK
}

// A server restart in the middle of a session: the session lives in the
// database and the device finishes where it was, on both APIs.
func TestRestartMidSession(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	rel := e.publish("1.0.4", 100_000) // 98 chunks: half crosses a progress write
	psk := e.addDevice("dev1", "1.0.3")
	d := e.device("dev1", psk)
	r, _ := d.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
	half := r.Chunks / 2
	var ct []byte
	for i := 0; i < half; i++ {
		d.Chunks(ctx, r.SessionID, i, 1, r.ChunkSize, func(f protocol.Frame) error { ct = append(ct, f.Data...); return nil })
	}
	e.restart()
	d = e.device("dev1", psk)
	r2, err := d.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
	if err != nil {
		t.Fatal(err)
	}
	if r2.SessionID != r.SessionID || r2.NextChunk == 0 {
		t.Fatalf("after restart: session %s next %d; want the same session resumed", r2.SessionID, r2.NextChunk)
	}
	ct = download(t, d, r2, half, 8, ct)
	env, err := bundle.ReadEnvelope(bytes.NewReader(rel.bundle))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := env.Unverified()
	if plain := e.decryptAll(t, ct, m.IVBytes()); !bytes.Equal(plain, rel.firmware) {
		t.Fatal("firmware differs after a restart mid-download")
	}
}

// 100 devices update at once, half on each API (run under -race).
func TestManyDevicesAtOnce(t *testing.T) {
	e := newEnv(t)
	rel := e.publish("1.0.4", 20_000)
	const n = 100
	psks := make([]protocol.PSK, n)
	for i := range n {
		psks[i] = e.addDevice(fmt.Sprintf("dev%03d", i), "1.0.3")
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- e.updateOne(fmt.Sprintf("dev%03d", i), psks[i], i%2 == 0, rel.firmware)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	devs, _ := e.admin.Devices(context.Background())
	for _, d := range devs {
		if d.Version != "1.0.4" {
			t.Fatalf("%s ended on %s", d.ID, d.Version)
		}
	}
	if s, _ := e.admin.Sessions(context.Background()); s.ActiveSessions != 0 {
		t.Fatalf("%d sessions still active", s.ActiveSessions)
	}
}

// updateOne runs one device's whole update without testing.T (goroutines).
func (e *env) updateOne(id string, psk protocol.PSK, native bool, want []byte) error {
	ctx := context.Background()
	var ct []byte
	var iv []byte
	if native {
		d, _ := client.NewDevice(e.http.URL, id, psk)
		d.Now = e.now
		r, err := d.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
		if err != nil {
			return fmt.Errorf("%s check: %w", id, err)
		}
		mb, _ := base64.StdEncoding.DecodeString(r.Manifest)
		m, err := bundle.ParseManifest(mb)
		if err != nil {
			return err
		}
		iv = m.IVBytes()
		for i := 0; i < r.Chunks; i += 4 {
			if err := d.Chunks(ctx, r.SessionID, i, 4, r.ChunkSize, func(f protocol.Frame) error { ct = append(ct, f.Data...); return nil }); err != nil {
				return fmt.Errorf("%s chunks: %w", id, err)
			}
		}
		if err := d.Report(ctx, r.SessionID, "confirmed", ""); err != nil {
			return err
		}
	} else {
		post := func(path, body string, out any) error {
			resp, err := http.Post(e.http.URL+path, "application/json", strings.NewReader(body))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				b, _ := io.ReadAll(resp.Body)
				return fmt.Errorf("%s %s: %d %s", id, path, resp.StatusCode, b)
			}
			return jsonDecode(resp.Body, out)
		}
		var check struct {
			TotalChunks int    `json:"total_chunks"`
			IV          string `json:"iv"`
		}
		if err := post("/ota/check", `{"device_id":"`+id+`","current_version":"1.0.3"}`, &check); err != nil {
			return err
		}
		iv, _ = base64.StdEncoding.DecodeString(check.IV)
		for i := 0; i < check.TotalChunks; i++ {
			var resp struct {
				Chunk struct {
					Data string `json:"data"`
					HMAC string `json:"hmac"`
				} `json:"chunk"`
			}
			if err := post("/ota/chunk", fmt.Sprintf(`{"device_id":"%s","version":"1.0.4","chunk_number":%d}`, id, i), &resp); err != nil {
				return err
			}
			data, _ := base64.StdEncoding.DecodeString(resp.Chunk.Data)
			if mac := protocol.LegacyChunkMAC(psk, i, data); hex.EncodeToString(mac[:]) != resp.Chunk.HMAC {
				return fmt.Errorf("%s chunk %d: bad hmac", id, i)
			}
			ct = append(ct, data...)
		}
		var ack map[string]string
		if err := post("/ota/complete", `{"device_id":"`+id+`","version":"1.0.4","boot_status":"success"}`, &ack); err != nil {
			return err
		}
	}
	var plain bytes.Buffer
	dec, _ := bundle.NewDecrypter(&plain, e.fwKey, iv)
	dec.Write(ct)
	if err := dec.Close(); err != nil {
		return fmt.Errorf("%s decrypt: %w", id, err)
	}
	if !bytes.Equal(plain.Bytes(), want) {
		return fmt.Errorf("%s: firmware differs", id)
	}
	return nil
}

func TestDeleteReleaseInUse(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.publish("1.0.4", 3000)
	d := e.device("dev1", e.addDevice("dev1", "1.0.3"))
	r, _ := d.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
	err := e.admin.DeleteRelease(ctx, "esp32", "1.0.4")
	if ae, ok := err.(*client.APIError); !ok || ae.Status != 409 {
		t.Fatalf("delete in use: %v", err)
	}
	d.Report(ctx, r.SessionID, "failed", "test")
	if err := e.admin.DeleteRelease(ctx, "esp32", "1.0.4"); err != nil {
		t.Fatal(err)
	}
	if keys, _ := e.blobs.Keys(time.Now().Add(time.Hour)); len(keys) != 0 {
		t.Fatalf("blob left after delete: %v", keys)
	}
}

func TestLogsHoldNoSecrets(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.publish("1.0.4", 3000)
	psk := e.addDevice("dev1", "1.0.3")
	d := e.device("dev1", psk)
	r, _ := d.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
	download(t, d, r, 0, 2, nil)
	e.call("POST", "/ota/check", `{"device_id":"dev1","current_version":"1.0.3"}`, nil)
	e.call("GET", "/v1/admin/releases", "", map[string]string{"Authorization": "Bearer fota_guess"})
	logs := e.logs.String()
	for name, secret := range map[string]string{"PSK": psk.Hex(), "token": e.token, "wrong token": "fota_guess"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain the %s", name)
		}
	}
	if !strings.Contains(logs, `"device_id":"dev1"`) {
		t.Error("request logs do not name the device")
	}
	// Per-chunk requests log at debug, so info logs do not grow per chunk.
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "/chunks") && strings.Contains(line, `"level":"INFO"`) {
			t.Errorf("chunk request logged at info: %s", line)
		}
	}
}

func TestInternalErrorsHideCause(t *testing.T) {
	e := newEnv(t)
	e.store.Close() // every query now fails inside the store
	status, body := e.call("GET", "/v1/admin/releases", "", e.adminHeader())
	if status != 500 || strings.Contains(fmt.Sprint(body), "sql") || !strings.Contains(fmt.Sprint(body["error"]), "internal error (request") {
		t.Fatalf("internal error answer: %d %v", status, body)
	}
	if !strings.Contains(e.logs.String(), "internal error") {
		t.Fatal("internal error not logged")
	}
}

// TestLargeAnswerToSlowDevice: a 16 MiB chunks answer outlasts the
// server's overall write timeout while the device keeps reading (each block
// gets its own deadline), and is cut off when the device stops reading.
func TestLargeAnswerToSlowDevice(t *testing.T) {
	e := newEnv(t)
	e.publish("1.0.4", 20<<20)
	slow := httptest.NewUnstartedServer(e.srv)
	slow.Config.WriteTimeout = 300 * time.Millisecond
	slow.Start()
	defer slow.Close()
	fetch := func(id string, pause func(n int) time.Duration) (int, error) {
		psk := e.addDevice(id, "1.0.3")
		d, err := client.NewDevice(slow.URL, id, psk)
		if err != nil {
			t.Fatal(err)
		}
		d.Now = e.now
		r, err := d.Check(context.Background(), protocol.CheckRequest{Version: "1.0.3", Hardware: "esp32"})
		if err != nil || !r.Update {
			t.Fatalf("check: %+v, %v", r, err)
		}
		got := 0
		err = d.Chunks(context.Background(), r.SessionID, 0, 16<<10, r.ChunkSize, func(protocol.Frame) error {
			got++
			time.Sleep(pause(got))
			return nil
		})
		return got, err
	}

	// 100 ms after every MiB: 1.6 s in all, well past the 300 ms timeout,
	// and past what the sockets buffer between the two.
	got, err := fetch("reader", func(n int) time.Duration {
		if n%1024 == 0 {
			return 100 * time.Millisecond
		}
		return 0
	})
	if err != nil || got != 16<<10 {
		t.Fatalf("a device reading steadily got %d of %d chunks: %v", got, 16<<10, err)
	}

	defer func(old time.Duration) { blockWriteTimeout = old }(blockWriteTimeout)
	blockWriteTimeout = 200 * time.Millisecond
	got, err = fetch("staller", func(n int) time.Duration {
		if n == 1024 {
			return time.Second
		}
		return 0
	})
	if err == nil || got == 16<<10 {
		t.Fatalf("a device that stopped reading for 1 s got %d chunks and %v; want the answer cut off", got, err)
	}
}
