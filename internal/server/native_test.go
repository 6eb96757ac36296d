package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecowatt/fota"
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
	return downloadWith(t, d, r, protocol.PreferredChunkMAC(r.ChunkMACs), from, count, into)
}

// downloadWith is download with the chunk MAC scheme given.
func downloadWith(t *testing.T, d *client.Device, r *protocol.CheckResponse, scheme protocol.ChunkMACScheme, from, count int, into []byte) []byte {
	t.Helper()
	for i := from; i < r.Chunks; i += count {
		err := d.Chunks(context.Background(), r.SessionID, scheme, i, count, r.ChunkSize, func(f protocol.Frame) error {
			into = append(into, f.Data...)
			return nil
		})
		if err != nil {
			t.Fatalf("chunks from %d: %v", i, err)
		}
	}
	return into
}

// offered registers device id on 1.0.3 and checks in, failing the test
// unless an update is offered: the start of most native tests.
func (e *env) offered(id string) (protocol.PSK, *client.Device, *protocol.CheckResponse) {
	e.t.Helper()
	psk := e.addDevice(id, "1.0.3")
	d := e.device(id, psk)
	r, err := d.Check(context.Background(), protocol.CheckRequest{Version: "1.0.3"})
	if err != nil || !r.Update {
		e.t.Fatalf("check of %s: %+v %v", id, r, err)
	}
	return psk, d, r
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
	err = d.Chunks(ctx, r.SessionID, protocol.ChunkMACv2, 0, 1, r.ChunkSize, func(protocol.Frame) error { return nil })
	if ae, ok := err.(*client.APIError); !ok || ae.Status != 410 {
		t.Fatalf("chunks after confirm: %v", err)
	}
	if r2, _ := d.Check(ctx, protocol.CheckRequest{Version: "1.0.4"}); r2.Update {
		t.Fatal("update offered again after confirm")
	}
}

func TestNativeMACsAndPayload(t *testing.T) {
	e := newEnv(t)
	e.publish("1.0.4", 10_000)
	psk, _, r := e.offered("dev1")

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

	// MACs for every chunk of the payload, bound to this session, in each
	// scheme; v1 when the device does not say.
	for query, scheme := range map[string]protocol.ChunkMACScheme{"": protocol.ChunkMACv1, "&mac=v1": protocol.ChunkMACv1, "&mac=v2": protocol.ChunkMACv2} {
		sreq, _ := http.NewRequest("GET", e.http.URL+r.MACsURL+"?from=0&count="+fmt.Sprint(r.Chunks)+query, nil)
		protocol.SignRequest(sreq, "dev1", psk, nil, e.now())
		resp, _ = http.DefaultClient.Do(sreq)
		macs, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if len(macs) != 32*r.Chunks {
			t.Fatalf("macs%s: %d bytes for %d chunks (%s)", query, len(macs), r.Chunks, macs)
		}
		for i := 0; i < r.Chunks; i++ {
			chunk := ct[i*r.ChunkSize : min((i+1)*r.ChunkSize, len(ct))]
			want := protocol.ChunkMAC(psk, r.SessionID, scheme, i, chunk)
			if !bytes.Equal(macs[i*32:(i+1)*32], want[:]) {
				t.Fatalf("macs%s: mac %d differs", query, i)
			}
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
	err := d2.Chunks(ctx, r1.SessionID, protocol.ChunkMACv2, 0, 1, 1024, func(protocol.Frame) error { return nil })
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

// TestReportAboutAnotherRelease: a refusal naming another release than
// the session's (an older signed manifest put into a real session's check
// answer on the way) is refused and changes nothing; one naming the
// session's release is recorded.
func TestReportAboutAnotherRelease(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.publish("1.0.4", 3000)
	d := e.device("dev1", e.addDevice("dev1", "1.0.3"))
	r, err := d.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
	if err != nil || !r.Update {
		t.Fatalf("check: %+v %v", r, err)
	}
	err = d.ReportRelease(ctx, r.SessionID, "1.0.2", "refused", "not newer than the running 1.0.3")
	if ae, ok := err.(*client.APIError); !ok || ae.Code != "invalid" || !strings.Contains(ae.Message, "is for 1.0.4") {
		t.Fatalf("a refusal of 1.0.2 on 1.0.4's session: %v", err)
	}
	again, err := d.Check(ctx, protocol.CheckRequest{Version: "1.0.3"})
	if err != nil || !again.Update || again.SessionID != r.SessionID {
		t.Fatalf("after the refused report the device is not offered its session again: %+v %v", again, err)
	}
	if err := d.ReportRelease(ctx, r.SessionID, "1.0.4", "refused", "does not fit"); err != nil {
		t.Fatalf("a refusal of the session's release: %v", err)
	}
	if after, _ := d.Check(ctx, protocol.CheckRequest{Version: "1.0.3"}); after.Update {
		t.Fatalf("a refused release offered again: %+v", after)
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
	psk, d, r := e.offered("dev1")
	half := r.Chunks / 2
	var ct []byte
	for i := 0; i < half; i++ {
		d.Chunks(ctx, r.SessionID, protocol.ChunkMACv2, i, 1, r.ChunkSize, func(f protocol.Frame) error { ct = append(ct, f.Data...); return nil })
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
		api := fota.APINative
		if i%2 == 1 {
			api = fota.APIEcoWatt
		}
		psks[i] = e.addDeviceAPI(fmt.Sprintf("dev%03d", i), "1.0.3", api)
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
			if err := d.Chunks(ctx, r.SessionID, protocol.ChunkMACv2, i, 4, r.ChunkSize, func(f protocol.Frame) error { ct = append(ct, f.Data...); return nil }); err != nil {
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
	_, d, r := e.offered("dev1")
	err := e.admin.DeleteRelease(ctx, "esp32", "1.0.4")
	if ae, ok := err.(*client.APIError); !ok || ae.Status != 409 {
		t.Fatalf("delete in use: %v", err)
	}
	d.Report(ctx, r.SessionID, "failed", "test")
	// Its rollout still holds it, until aborted.
	err = e.admin.DeleteRelease(ctx, "esp32", "1.0.4")
	if ae, ok := err.(*client.APIError); !ok || ae.Status != 409 || !strings.Contains(ae.Message, "abort the rollout first") {
		t.Fatalf("delete while its rollout runs: %v", err)
	}
	rs, err := e.admin.Rollouts(ctx)
	if err != nil || len(rs) != 1 {
		t.Fatalf("rollouts: %+v %v", rs, err)
	}
	if _, err := e.admin.RolloutAction(ctx, rs[0].ID, "abort", ""); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.DeleteRelease(ctx, "esp32", "1.0.4"); err != nil {
		t.Fatal(err)
	}
	if keys, _ := e.blobs.Keys(time.Now().Add(time.Hour)); len(keys) != 0 {
		t.Fatalf("blob left after delete: %v", keys)
	}
}

func TestLogsHoldNoSecrets(t *testing.T) {
	e := newEnv(t)
	e.publish("1.0.4", 3000)
	psk, d, r := e.offered("dev1")
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
		err = d.Chunks(context.Background(), r.SessionID, protocol.ChunkMACv1, 0, 16<<10, r.ChunkSize, func(protocol.Frame) error {
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

func TestNativeChunkMACSchemes(t *testing.T) {
	e := newEnv(t)
	e.publish("1.0.4", 300_000)
	psk, d, r := e.offered("dev1")
	if fmt.Sprint(r.ChunkMACs) != "[v1 v2]" {
		t.Fatalf("check answer offers chunk MACs %v, want [v1 v2]", r.ChunkMACs)
	}
	// Both schemes give the same bytes, each chunk checked by the client,
	// in answers of one block and of several.
	v1 := downloadWith(t, d, r, protocol.ChunkMACv1, 0, r.Chunks, nil)
	for _, per := range []int{1, 16, r.Chunks} {
		if v2 := downloadWith(t, d, r, protocol.ChunkMACv2, 0, per, nil); !bytes.Equal(v1, v2) {
			t.Fatalf("%d chunks per answer: v2 download differs from v1", per)
		}
	}
	// The frames carry the scheme's HMAC: a v1 device is not handed v2 MACs.
	for _, scheme := range protocol.ChunkMACSchemes {
		req, _ := http.NewRequest("GET", e.http.URL+r.ChunksURL+"?from=5&count=1&mac="+string(scheme), nil)
		protocol.SignRequest(req, "dev1", psk, nil, e.now())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		f, err := protocol.NewFrameReader(resp.Body, r.ChunkSize, 4096).Next()
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if want := protocol.ChunkMAC(psk, r.SessionID, scheme, 5, v1[5*1024:6*1024]); f.MAC != want {
			t.Errorf("mac=%s: frame carries another HMAC", scheme)
		}
	}
	// An unknown scheme is refused, saying which exist.
	req, _ := http.NewRequest("GET", e.http.URL+r.ChunksURL+"?from=0&mac=v3", nil)
	protocol.SignRequest(req, "dev1", psk, nil, e.now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "want v1 or v2") {
		t.Fatalf("mac=v3: %d %s", resp.StatusCode, body)
	}
}

func TestChunkDigestsRefuseAlteredCiphertext(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.publish("1.0.4", 20_000)
	psk, d, r := e.offered("dev1")
	rels, _ := e.store.Releases(ctx, "")
	path := filepath.Join(e.dir, "blobs", rels[0].BlobKey)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(good)
	bad[3000] ^= 1 // in chunk 2
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	// The server that published the release hashed its chunks then: the
	// altered chunk fails its HMAC on the device, the others still verify.
	var got []byte
	err = d.Chunks(ctx, r.SessionID, protocol.ChunkMACv2, 0, 2, r.ChunkSize, func(f protocol.Frame) error { got = append(got, f.Data...); return nil })
	if err != nil || !bytes.Equal(got, good[:2048]) {
		t.Fatalf("chunks 0-1 of the altered blob: %d bytes, %v", len(got), err)
	}
	err = d.Chunks(ctx, r.SessionID, protocol.ChunkMACv2, 2, 1, r.ChunkSize, func(protocol.Frame) error { return nil })
	if !errors.Is(err, client.ErrChunkMAC) {
		t.Fatalf("altered chunk 2: %v, want ErrChunkMAC", err)
	}
	// A server that must hash the stored file (restarted, or another
	// replica) checks it against the release first: not served under v2
	// HMACs, and the log says what to do.
	e.restart()
	d = e.device("dev1", psk)
	err = d.Chunks(ctx, r.SessionID, protocol.ChunkMACv2, 0, 1, r.ChunkSize, func(protocol.Frame) error { return nil })
	if ae, ok := err.(*client.APIError); !ok || ae.Status != 500 {
		t.Fatalf("chunks of an altered blob: %v, want a 500", err)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "does not match the release's SHA-256; delete the release and publish its bundle again") {
		t.Fatalf("log does not explain the refusal:\n%s", logs)
	}
	// The failure is not kept: once the file is repaired, v2 serves again.
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := downloadWith(t, d, r, protocol.ChunkMACv2, 0, 16, nil); !bytes.Equal(got, good) {
		t.Fatal("v2 download after the repair differs from the stored ciphertext")
	}
}

func TestDigestCacheComputesOnceAndEvicts(t *testing.T) {
	var calls sync.Map // release id -> *atomic.Int32
	release := make(chan struct{})
	compute := func(rel *fota.Release) ([][32]byte, error) {
		n, _ := calls.LoadOrStore(rel.ID, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		if rel.ID == 1 {
			<-release
		}
		return make([][32]byte, rel.Chunks()), nil
	}
	count := func(id int64) int32 {
		n, ok := calls.Load(id)
		if !ok {
			return 0
		}
		return n.(*atomic.Int32).Load()
	}
	// Room for one release of 100 chunks.
	c := newDigestCache(100 * 32)
	rel := func(id int64) *fota.Release {
		return &fota.Release{ID: id, BlobKey: fmt.Sprint("blob", id), ChunkSize: 1024, CiphertextSize: 100 * 1024}
	}

	// Ten requests for one release at once: it is hashed once, all get it.
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if sums, err := c.get(context.Background(), rel(1), compute); err != nil || len(sums) != 100 {
				t.Errorf("get: %d sums, %v", len(sums), err)
			}
		})
	}
	for count(1) == 0 {
		runtime.Gosched()
	}
	// A request that gives up waiting says why.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.get(ctx, rel(1), compute); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled wait: %v", err)
	}
	close(release)
	wg.Wait()
	if count(1) != 1 {
		t.Fatalf("release hashed %d times for 11 requests, want once", count(1))
	}
	// A second release pushes the first out; asking for the first again
	// hashes it again; a deleted release is forgotten.
	c.get(context.Background(), rel(2), compute)
	c.get(context.Background(), rel(1), compute)
	if count(1) != 2 || count(2) != 1 {
		t.Fatalf("hashed release 1 %d times, release 2 %d; want 2 and 1", count(1), count(2))
	}
	c.get(context.Background(), rel(1), compute)
	if count(1) != 2 {
		t.Fatal("the release just hashed was pushed out")
	}
	c.forget("blob1")
	c.get(context.Background(), rel(1), compute)
	if count(1) != 3 || c.used != 100*32 {
		t.Fatalf("after forget: hashed %d times, %d bytes accounted", count(1), c.used)
	}
	// A failure is not kept.
	failing := func(*fota.Release) ([][32]byte, error) { return nil, errors.New("disk on fire") }
	if _, err := c.get(context.Background(), rel(3), failing); err == nil {
		t.Fatal("failure not returned")
	}
	if sums, err := c.get(context.Background(), rel(3), compute); err != nil || len(sums) != 100 {
		t.Fatalf("after a failure: %d sums, %v", len(sums), err)
	}
}
