// Package e2e runs the real fota binary: server, CLI, and two device
// clients written from docs/PROTOCOL.md and docs/FORMAT.md alone, using the
// standard library only (no fota package), as another implementation would.
package e2e

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	// The binary is built from these sources with go build; importing them
	// (and reading main.go below) makes go test's cache notice their changes.
	_ "github.com/ecowatt/fota/internal/cli"
)

var fotaBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fota-e2e")
	if err != nil {
		panic(err)
	}
	fotaBin = filepath.Join(dir, "fota")
	if _, err := os.ReadFile("../../cmd/fota/main.go"); err != nil {
		panic(err)
	}
	if out, err := exec.Command("go", "build", "-o", fotaBin, "../../cmd/fota").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build fota: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fota runs the CLI in dir and returns stdout; a failure fails the test.
func fota(t testing.TB, dir string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(fotaBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("fota %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

type serverProc struct {
	cmd   *exec.Cmd
	url   string
	token string
	mqtt  string // the embedded MQTT broker's URL, with --mqtt-listen
	done  chan error
	out   *bytes.Buffer
}

var listenRE = regexp.MustCompile(`listening on (https?://[0-9.:]+)`)
var mqttRE = regexp.MustCompile(`push notifications through the MQTT broker on (mqtts?://[0-9.:]+)`)
var tokenRE = regexp.MustCompile(`admin token \(shown once; keep it secret\): (fota_\S+)`)

// startServer runs fota serve on a free port and waits until it listens.
func startServer(t testing.TB, dir string, extra ...string) *serverProc {
	t.Helper()
	cmd := exec.Command(fotaBin, append([]string{"serve", "--data", "data", "--addr", "127.0.0.1:0", "--trust", "keys/signing.pub"}, extra...)...)
	cmd.Dir = dir
	stdout, _ := cmd.StdoutPipe()
	p := &serverProc{cmd: cmd, done: make(chan error, 1), out: &bytes.Buffer{}}
	cmd.Stderr = p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	deadline := time.After(20 * time.Second)
	found := make(chan struct{})
	go func() {
		for lines.Scan() {
			line := lines.Text()
			if m := tokenRE.FindStringSubmatch(line); m != nil {
				p.token = m[1]
			}
			if m := mqttRE.FindStringSubmatch(line); m != nil {
				p.mqtt = m[1]
			}
			if m := listenRE.FindStringSubmatch(line); m != nil {
				p.url = m[1]
				close(found)
			}
		}
	}()
	go func() { p.done <- cmd.Wait() }()
	select {
	case <-found:
	case err := <-p.done:
		t.Fatalf("fota serve exited: %v\n%s", err, p.out)
	case <-deadline:
		cmd.Process.Kill()
		t.Fatalf("fota serve did not start\n%s", p.out)
	}
	t.Cleanup(func() { p.cmd.Process.Kill() })
	return p
}

// metrics reads the server's /metrics with its admin token.
func (p *serverProc) metrics(t testing.TB) string {
	t.Helper()
	req, _ := http.NewRequest("GET", p.url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d, %v", resp.StatusCode, err)
	}
	return string(body)
}

func (p *serverProc) stop(t testing.TB) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("fota serve exited with %v after SIGTERM\n%s", err, p.out)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("fota serve did not stop after SIGTERM")
	}
}

type credentials struct {
	DeviceID string `json:"device_id"`
	PSK      string `json:"psk"`
	Server   string `json:"server"`
}

func readCredentials(t *testing.T, path string) credentials {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c credentials
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func loadRSAPub(t *testing.T, path string) *rsa.PublicKey {
	b, _ := os.ReadFile(path)
	block, _ := pem.Decode(b)
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*rsa.PublicKey)
}

// decrypt is AES-256-CBC with PKCS#7, as docs/FORMAT.md specifies.
func decrypt(t *testing.T, key, iv, ct []byte) []byte {
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	if len(ct) == 0 || len(ct)%16 != 0 {
		t.Fatalf("ciphertext of %d bytes", len(ct))
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(pt, ct)
	pad := int(pt[len(pt)-1])
	if pad < 1 || pad > 16 {
		t.Fatalf("bad padding %d", pad)
	}
	return pt[:len(pt)-pad]
}

func postJSON(t *testing.T, url string, body any, out any) int {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("POST %s: %d %s", url, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode
}

// legacyUpdate is the original EcoWatt client's flow, from PROTOCOL.md.
func legacyUpdate(t *testing.T, base string, cred credentials, pub *rsa.PublicKey, fwKey []byte) []byte {
	var check struct {
		UpdateAvailable bool   `json:"update_available"`
		Version         string `json:"version"`
		OriginalSize    int    `json:"original_size"`
		EncryptedSize   int    `json:"encrypted_size"`
		TotalChunks     int    `json:"total_chunks"`
		ChunkSize       int    `json:"chunk_size"`
		SHA256Hash      string `json:"sha256_hash"`
		Signature       string `json:"signature"`
		IV              string `json:"iv"`
	}
	if st := postJSON(t, base+"/ota/check", map[string]string{"device_id": cred.DeviceID, "current_version": "1.0.3"}, &check); st != 200 || !check.UpdateAvailable {
		t.Fatalf("legacy check: %d %+v", st, check)
	}
	var ct []byte
	for n := 0; n < check.TotalChunks; n++ {
		var resp struct {
			Chunk struct {
				ChunkNumber int    `json:"chunk_number"`
				Data        string `json:"data"`
				Size        int    `json:"size"`
				HMAC        string `json:"hmac"`
				TotalChunks int    `json:"total_chunks"`
			} `json:"chunk"`
			Progress struct {
				ChunksReceived int     `json:"chunks_received"`
				Percentage     float64 `json:"percentage"`
			} `json:"progress"`
		}
		if st := postJSON(t, base+"/ota/chunk", map[string]any{"device_id": cred.DeviceID, "version": check.Version, "chunk_number": n}, &resp); st != 200 {
			t.Fatalf("legacy chunk %d: %d", n, st)
		}
		data, _ := base64.StdEncoding.DecodeString(resp.Chunk.Data)
		// HMAC key: the ASCII hex text of the PSK; message: data then decimal chunk number.
		m := hmac.New(sha256.New, []byte(cred.PSK))
		m.Write(data)
		m.Write([]byte(strconv.Itoa(n)))
		if hex.EncodeToString(m.Sum(nil)) != resp.Chunk.HMAC || resp.Chunk.Size != len(data) || resp.Chunk.ChunkNumber != n {
			t.Fatalf("legacy chunk %d fails its HMAC", n)
		}
		ct = append(ct, data...)
	}
	iv, _ := base64.StdEncoding.DecodeString(check.IV)
	fw := decrypt(t, fwKey, iv, ct)
	sum := sha256.Sum256(fw)
	if len(fw) != check.OriginalSize || hex.EncodeToString(sum[:]) != check.SHA256Hash {
		t.Fatal("legacy: firmware size or SHA-256 mismatch")
	}
	sig, _ := base64.StdEncoding.DecodeString(check.Signature)
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		t.Fatalf("legacy signature: %v", err)
	}
	postJSON(t, base+"/ota/verify", map[string]any{"device_id": cred.DeviceID, "verified": true, "version": check.Version}, nil)
	if st := postJSON(t, base+"/ota/complete", map[string]any{"device_id": cred.DeviceID, "version": check.Version, "boot_status": "success"}, nil); st != 200 {
		t.Fatalf("legacy complete: %d", st)
	}
	return fw
}

// nativeRequest signs and sends a native API request as PROTOCOL.md says.
func nativeRequest(t *testing.T, base, method, uri string, cred credentials, body []byte) (*http.Response, error) {
	psk, _ := hex.DecodeString(cred.PSK)
	nonce := make([]byte, 16)
	rand.Read(nonce)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	bodySum := sha256.Sum256(body)
	canonical := strings.Join([]string{"fota-request-v1", method, uri, cred.DeviceID, ts, hex.EncodeToString(nonce), hex.EncodeToString(bodySum[:])}, "\n")
	m := hmac.New(sha256.New, psk)
	m.Write([]byte(canonical))
	req, _ := http.NewRequest(method, base+uri, bytes.NewReader(body))
	req.Header.Set("X-Fota-Device", cred.DeviceID)
	req.Header.Set("X-Fota-Timestamp", ts)
	req.Header.Set("X-Fota-Nonce", hex.EncodeToString(nonce))
	req.Header.Set("X-Fota-Signature", hex.EncodeToString(m.Sum(nil)))
	return http.DefaultClient.Do(req)
}

type nativeCheck struct {
	Update    bool   `json:"update"`
	SessionID string `json:"session_id"`
	Manifest  string `json:"manifest"`
	Signature string `json:"signature"`
	ChunkSize int    `json:"chunk_size"`
	Chunks    int    `json:"chunks"`
	NextChunk int    `json:"next_chunk"`
	ChunksURL string `json:"chunks_url"`
	ReportURL string `json:"report_url"`
}

func nativeCheckIn(t *testing.T, base string, cred credentials) nativeCheck {
	resp, err := nativeRequest(t, base, "POST", "/v1/device/check", cred, []byte(`{"version":"1.0.3","hardware":"esp32"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c nativeCheck
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || json.Unmarshal(raw, &c) != nil || !c.Update {
		t.Fatalf("native check: %d %s", resp.StatusCode, raw)
	}
	return c
}

// nativeChunks fetches chunks [from, to) and checks every frame's HMAC.
// nativeChunks fetches chunks [from, to) with the chunk MAC scheme given
// ("v1" or "v2"), checking each HMAC as docs/PROTOCOL.md spells it.
func nativeChunks(t *testing.T, base string, cred credentials, c nativeCheck, scheme string, from, to int) []byte {
	psk, _ := hex.DecodeString(cred.PSK)
	var out []byte
	for from < to {
		uri := fmt.Sprintf("%s?from=%d&count=%d", c.ChunksURL, from, min(32, to-from))
		if scheme == "v2" {
			uri += "&mac=v2"
		}
		resp, err := nativeRequest(t, base, "GET", uri, cred, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", uri, resp.StatusCode, body)
		}
		for len(body) > 0 {
			index := int(binary.BigEndian.Uint32(body[0:4]))
			n := int(binary.BigEndian.Uint32(body[4:8]))
			mac, data := body[8:40], body[40:40+n]
			var want []byte
			if scheme == "v2" {
				k := hmac.New(sha256.New, psk)
				k.Write([]byte("fota-chunk-v2\n" + c.SessionID))
				m := hmac.New(sha256.New, k.Sum(nil))
				digest := sha256.Sum256(data)
				binary.Write(m, binary.BigEndian, uint32(index))
				m.Write(digest[:])
				want = m.Sum(nil)
			} else {
				m := hmac.New(sha256.New, psk)
				m.Write([]byte("fota-chunk-v1\n" + c.SessionID + "\n"))
				binary.Write(m, binary.BigEndian, uint32(index))
				m.Write(data)
				want = m.Sum(nil)
			}
			if index != from || !hmac.Equal(want, mac) {
				t.Fatalf("native chunk %d (expected %d) fails its %s HMAC", index, from, scheme)
			}
			out = append(out, data...)
			body = body[40+n:]
			from++
		}
	}
	return out
}

func TestEndToEnd(t *testing.T) {
	dir := t.TempDir()
	fota(t, dir, nil, "keys", "init", "--dir", "keys")
	fota(t, dir, nil, "firmware", "sample", "--version", "1.0.4", "--size", "200KiB", "-o", "app.bin")
	fota(t, dir, nil, "release", "build", "--keys", "keys", "-o", "app-1.0.4.fota", "app.bin")
	srv := startServer(t, dir)
	if srv.token == "" {
		t.Fatal("first start printed no admin token")
	}
	env := []string{"FOTA_SERVER=" + srv.url, "FOTA_TOKEN=" + srv.token}
	out := fota(t, dir, env, "release", "publish", "--rollout", "all", "app-1.0.4.fota")
	if !strings.Contains(out, "published ecowatt 1.0.4 for esp32") {
		t.Fatalf("publish: %s", out)
	}
	fota(t, dir, env, "device", "add", "--id", "legacy-1", "--hardware", "esp32", "--version", "1.0.3", "--api", "ecowatt", "--credentials", "legacy.json", "--keys-h", "legacy_keys.h", "--keys", "keys")
	fota(t, dir, env, "device", "add", "--id", "native-1", "--hardware", "esp32", "--version", "1.0.3", "--credentials", "native.json")
	// A second token made while the server runs works at once.
	token2 := strings.TrimSpace(fota(t, dir, nil, "token", "create", "--data", "data", "--name", "ci"))
	if !strings.HasPrefix(token2, "fota_") || strings.Contains(token2, "\n") {
		t.Fatalf("token create printed %q", token2)
	}

	pub := loadRSAPub(t, filepath.Join(dir, "keys", "signing.pub"))
	fwKey, _ := os.ReadFile(filepath.Join(dir, "keys", "firmware.key"))
	firmware, _ := os.ReadFile(filepath.Join(dir, "app.bin"))

	if fw := legacyUpdate(t, srv.url, readCredentials(t, filepath.Join(dir, "legacy.json")), pub, fwKey); !bytes.Equal(fw, firmware) {
		t.Fatal("legacy client got different firmware")
	}
	header, _ := os.ReadFile(filepath.Join(dir, "legacy_keys.h"))
	for _, sym := range []string{"DEVICE_ID", "HMAC_PSK", "SERVER_PUBLIC_KEY", "AES_FIRMWARE_KEY"} {
		if !bytes.Contains(header, []byte(sym)) {
			t.Errorf("device keys.h lacks %s", sym)
		}
	}

	// Native client: verify the manifest first, download half, restart the server, resume.
	cred := readCredentials(t, filepath.Join(dir, "native.json"))
	c := nativeCheckIn(t, srv.url, cred)
	manifest, _ := base64.StdEncoding.DecodeString(c.Manifest)
	sig, _ := base64.StdEncoding.DecodeString(c.Signature)
	mdigest := sha256.Sum256(manifest)
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, mdigest[:], sig); err != nil {
		t.Fatalf("manifest signature: %v", err)
	}
	var m struct {
		Version          string `json:"version"`
		IV               string `json:"iv"`
		PlaintextSHA256  string `json:"plaintext_sha256"`
		CiphertextSHA256 string `json:"ciphertext_sha256"`
	}
	json.Unmarshal(manifest, &m)
	half := c.Chunks / 2
	ct := nativeChunks(t, srv.url, cred, c, "v1", 0, half)

	srv.stop(t)
	srv = startServer(t, dir)
	if srv.token != "" {
		t.Fatal("a restart printed a new admin token")
	}
	c2 := nativeCheckIn(t, srv.url, cred)
	if c2.SessionID != c.SessionID {
		t.Fatalf("after restart the session changed: %s -> %s", c.SessionID, c2.SessionID)
	}
	ct = append(ct, nativeChunks(t, srv.url, cred, c2, "v2", half, c2.Chunks)...)
	ctSum := sha256.Sum256(ct)
	iv, _ := hex.DecodeString(m.IV)
	fw := decrypt(t, fwKey, iv, ct)
	fwSum := sha256.Sum256(fw)
	if hex.EncodeToString(ctSum[:]) != m.CiphertextSHA256 || hex.EncodeToString(fwSum[:]) != m.PlaintextSHA256 || !bytes.Equal(fw, firmware) {
		t.Fatal("native client: hashes or firmware differ")
	}
	resp, err := nativeRequest(t, srv.url, "POST", c2.ReportURL, cred, []byte(`{"status":"confirmed"}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("report: %v %v", err, resp.Status)
	}
	resp.Body.Close()

	env = []string{"FOTA_SERVER=" + srv.url, "FOTA_TOKEN=" + token2}
	list := fota(t, dir, env, "device", "list")
	if strings.Count(list, "1.0.4") != 2 {
		t.Fatalf("device list after both updates:\n%s", list)
	}
	status := fota(t, dir, env, "status")
	if !strings.Contains(status, "0 update session(s) in progress") || !strings.Contains(status, "confirmed") {
		t.Fatalf("status:\n%s", status)
	}
	srv.stop(t)
}

func TestServeRefusesBadStart(t *testing.T) {
	dir := t.TempDir()
	fota(t, dir, nil, "keys", "init", "--dir", "keys")
	cmd := exec.Command(fotaBin, "serve", "--data", "data")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "no --trust key") {
		t.Fatalf("serve without --trust: %v\n%s", err, out)
	}
	cmd = exec.Command(fotaBin, "serve", "--data", "data", "--trust", "keys/signing.pub", "--max-conns", "0")
	cmd.Dir = dir
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--max-conns 0: want at least 1") {
		t.Fatalf("serve --max-conns 0: %v\n%s", err, out)
	}
	cmd = exec.Command(fotaBin, "serve", "--data", "data", "--trust", "keys/signing.key")
	cmd.Dir = dir
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "PUBLIC KEY") {
		t.Fatalf("serve with a private key as trust: %v\n%s", err, out)
	}
}

// --memory-limit reaches the Go runtime (as /metrics shows), and a value
// that is not a size, or too small to run on, is refused before starting.
func TestServeMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	fota(t, dir, nil, "keys", "init", "--dir", "keys")
	for arg, msg := range map[string]string{"lots": `"lots" is not a size`, "16MiB": "below 64 MiB", "-5": "is not a size"} {
		cmd := exec.Command(fotaBin, "serve", "--data", "data", "--trust", "keys/signing.pub", "--memory-limit", arg)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), msg) {
			t.Fatalf("serve --memory-limit %s: %v\n%s", arg, err, out)
		}
	}
	srv := startServer(t, dir, "--memory-limit", "96MiB")
	body := srv.metrics(t)
	if !strings.Contains(string(body), "go_gc_gomemlimit_bytes 1.00663296e+08") {
		t.Fatalf("/metrics does not show the 96 MiB limit:\n%s", grepLines(string(body), "gomemlimit"))
	}
	srv.stop(t)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Forty devices at once against a server that holds four connections:
// the rest wait to connect, crowded connections are rotated, and every
// update completes, for the real agent and for HMAC-only devices.
func TestServeConnectionLimit(t *testing.T) {
	dir := t.TempDir()
	fota(t, dir, nil, "keys", "init", "--dir", "keys")
	srv := startServer(t, dir, "--max-conns", "4")
	env := []string{"FOTA_SERVER=" + srv.url, "FOTA_TOKEN=" + srv.token}
	for _, verify := range []string{"full", "hmac"} {
		out := fota(t, dir, env, "load", "--keys", "keys", "--devices", "40", "--release-size", "48KiB", "--chunks-per-request", "8", "--verify", verify)
		if !strings.Contains(out, "updates completed             40\n") || !strings.Contains(out, "updates failed                0\n") {
			t.Fatalf("--verify %s through 4 connections:\n%s", verify, out)
		}
	}
	srv.stop(t)
}

// A second server on a data folder in use is refused, and says what to do;
// once the first stops, the folder is free again.
func TestServeRefusesSharedDataFolder(t *testing.T) {
	dir := t.TempDir()
	fota(t, dir, nil, "keys", "init", "--dir", "keys")
	first := startServer(t, dir)
	cmd := exec.Command(fotaBin, "serve", "--data", "data", "--addr", "127.0.0.1:0", "--trust", "keys/signing.pub")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "in use by another fota serve") {
		t.Fatalf("second server on one data folder: %v\n%s", err, out)
	}
	first.stop(t)
	startServer(t, dir).stop(t)
}

// TestServeTLS serves HTTPS with a certificate made here and checks that a
// client trusting it gets through, and a plain-HTTP client does not.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	fota(t, dir, nil, "keys", "init", "--dir", "keys")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fota test"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	srv := startServer(t, dir, "--tls-cert", "cert.pem", "--tls-key", "key.pem")
	if !strings.HasPrefix(srv.url, "https://") {
		t.Fatalf("serving %s, want https", srv.url)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get(srv.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz over TLS: %d", resp.StatusCode)
	}
	if resp, err := http.Get("http://" + strings.TrimPrefix(srv.url, "https://") + "/healthz"); err == nil && resp.StatusCode == 200 {
		t.Fatal("plain HTTP was served on the TLS port")
	}
	srv.stop(t)
}

// TestServerCrashConsistency kills the server with SIGKILL in the middle of
// a bundle upload and in the middle of a download: after a restart there is
// no half release, no leftover blob, and the device finishes its download.
func TestServerCrashConsistency(t *testing.T) {
	dir := t.TempDir()
	fota(t, dir, nil, "keys", "init", "--dir", "keys")
	fota(t, dir, nil, "firmware", "sample", "--version", "1.0.4", "--size", "2MiB", "-o", "app.bin")
	fota(t, dir, nil, "release", "build", "--keys", "keys", "-o", "app.fota", "app.bin")
	bundleBytes, _ := os.ReadFile(filepath.Join(dir, "app.fota"))
	srv := startServer(t, dir)
	token := srv.token

	// Upload half the bundle slowly, then kill the server.
	pr, pw := io.Pipe()
	go func() {
		pw.Write(bundleBytes[:len(bundleBytes)/2])
		time.Sleep(2 * time.Second)
		pw.CloseWithError(io.ErrUnexpectedEOF)
	}()
	req, _ := http.NewRequest("POST", srv.url+"/v1/admin/releases", pr)
	req.Header.Set("Authorization", "Bearer "+token)
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	time.Sleep(500 * time.Millisecond)
	srv.cmd.Process.Signal(syscall.SIGKILL)
	<-srv.done
	<-errc
	tmp, _ := os.ReadDir(filepath.Join(dir, "data", "blobs", "tmp"))
	t.Logf("after SIGKILL mid-upload: %d temporary blob(s) on disk", len(tmp))

	srv = startServer(t, dir)
	env := []string{"FOTA_SERVER=" + srv.url, "FOTA_TOKEN=" + token}
	if list := fota(t, dir, env, "release", "list"); strings.Contains(list, "1.0.4") {
		t.Fatalf("a half-uploaded release is listed:\n%s", list)
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, "data", "blobs", "tmp")); len(tmp) != 0 {
		t.Fatalf("%d temporary blobs survived the restart", len(tmp))
	}
	if blobs, _ := filepath.Glob(filepath.Join(dir, "data", "blobs", "[0-9a-f]*")); len(blobs) != 0 {
		t.Fatalf("blobs without a release: %v", blobs)
	}
	fota(t, dir, env, "release", "publish", "--rollout", "all", "app.fota")
	fota(t, dir, env, "device", "add", "--id", "crash-1", "--hardware", "esp32", "--version", "1.0.3", "--credentials", "crash.json")

	// Download half, kill the server, restart, finish.
	cred := readCredentials(t, filepath.Join(dir, "crash.json"))
	c := nativeCheckIn(t, srv.url, cred)
	ct := nativeChunks(t, srv.url, cred, c, "v1", 0, c.Chunks/2)
	srv.cmd.Process.Signal(syscall.SIGKILL)
	<-srv.done
	srv = startServer(t, dir)
	c2 := nativeCheckIn(t, srv.url, cred)
	if c2.SessionID != c.SessionID {
		t.Fatalf("the session did not survive SIGKILL: %s -> %s", c.SessionID, c2.SessionID)
	}
	ct = append(ct, nativeChunks(t, srv.url, cred, c2, "v2", c.Chunks/2, c2.Chunks)...)
	fwKey, _ := os.ReadFile(filepath.Join(dir, "keys", "firmware.key"))
	var m struct {
		IV string `json:"iv"`
	}
	manifest, _ := base64.StdEncoding.DecodeString(c2.Manifest)
	json.Unmarshal(manifest, &m)
	iv, _ := hex.DecodeString(m.IV)
	firmware, _ := os.ReadFile(filepath.Join(dir, "app.bin"))
	if fw := decrypt(t, fwKey, iv, ct); !bytes.Equal(fw, firmware) {
		t.Fatal("firmware differs after a server SIGKILL mid-download")
	}
	srv.stop(t)
}
