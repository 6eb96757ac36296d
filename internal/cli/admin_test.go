package cli

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecowatt/fota/internal/server"
	"github.com/ecowatt/fota/keys"
)

// adminEnv serves a real server in-process and sets FOTA_SERVER/FOTA_TOKEN.
func adminEnv(t *testing.T) (dir, keyDir string) {
	dir, keyDir, _ = setup(t)
	store, blobs, err := openData(context.Background(), filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close(); blobs.Close() })
	pub, _ := keys.LoadPublicKey(filepath.Join(keyDir, "signing.pub"))
	srv, err := server.New(server.Config{Store: store, Blobs: blobs, Trusted: []*keys.PublicKey{pub}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() { hs.Close(); srv.Close() })
	token, err := createToken(context.Background(), store, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("FOTA_SERVER", hs.URL)
	t.Setenv("FOTA_TOKEN", token)
	return dir, keyDir
}

func TestDeviceAddOutputs(t *testing.T) {
	dir, keyDir := adminEnv(t)
	cred := filepath.Join(dir, "dev.json")
	header := filepath.Join(dir, "dev_keys.h")
	run(t, "device", "add", "--id", "d1", "--hardware", "esp32", "--version", "1.0.3").expect(t, 2, "", "shown only once")
	run(t, "device", "add", "--id", "d1", "--hardware", "esp32", "--version", "1.0.3", "--keys-h", header).expect(t, 2, "", "--keys-h and --ecowatt-keys need --keys")
	os.WriteFile(cred, []byte("keep me"), 0o600)
	run(t, "device", "add", "--id", "d1", "--hardware", "esp32", "--version", "1.0.3", "--credentials", cred).expect(t, 1, "", "already exists")
	// The refusal came before the server was asked: the id is still free.
	os.Remove(cred)
	run(t, "device", "add", "--id", "d1", "--hardware", "esp32", "--version", "1.0.3", "--credentials", cred,
		"--keys-h", header, "--keys", keyDir).expect(t, 0, "added device d1", "")
	var c Credentials
	b, _ := os.ReadFile(cred)
	if err := json.Unmarshal(b, &c); err != nil || c.DeviceID != "d1" || len(c.PSK) != 64 || c.Server != os.Getenv("FOTA_SERVER") {
		t.Fatalf("credentials %s: %v", b, err)
	}
	for _, p := range []string{cred, header} {
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
			t.Fatalf("%s has mode %04o", p, st.Mode().Perm())
		}
	}
	h, _ := os.ReadFile(header)
	if !strings.Contains(string(h), `static const char HMAC_PSK[] =`+"\n    \""+c.PSK+`"`) {
		t.Fatalf("keys.h does not hold the PSK as a C string:\n%s", h)
	}
	run(t, "device", "add", "--id", "d1", "--hardware", "esp32", "--version", "1.0.3", "--credentials", filepath.Join(dir, "x.json")).
		expect(t, 1, "", "server answered 409: device d1 exists already")
	run(t, "device", "list").expect(t, 0, "d1", "")
	run(t, "device", "show", "--id", "d1").expect(t, 0, "device-added", "")
	run(t, "device", "assign", "--id", "d1").expect(t, 2, "", "exactly one of --version or --unpin")
	run(t, "device", "assign", "--id", "d1", "--version", "1.0.4").expect(t, 1, "", "no release 1.0.4 for esp32")
}

// TestDeviceURL: keys.h and the credentials carry the URL devices reach the
// server at; a loopback one is warned about, since no device on the
// network reaches it.
func TestDeviceURL(t *testing.T) {
	dir, keyDir := adminEnv(t)
	header, cred := filepath.Join(dir, "k.h"), filepath.Join(dir, "d.json")
	run(t, "device", "add", "--id", "d1", "--hardware", "esp32", "--version", "1.0.3", "--keys-h", header, "--keys", keyDir).
		expect(t, 0, "added device d1", "loopback address")
	run(t, "device", "add", "--id", "d2", "--hardware", "esp32", "--version", "1.0.3", "--keys-h", filepath.Join(dir, "k2.h"),
		"--keys", keyDir, "--credentials", cred, "--device-url", "https://fota.example.com:8443").expect(t, 0, "added device d2", "")
	h, _ := os.ReadFile(filepath.Join(dir, "k2.h"))
	b, _ := os.ReadFile(cred)
	if !strings.Contains(string(h), `"https://fota.example.com:8443"`) || !strings.Contains(string(b), `"https://fota.example.com:8443"`) ||
		!strings.Contains(string(h), "FOTA_DEVICE_KEYS_H") {
		t.Fatalf("keys.h:\n%s\ncredentials: %s", h, b)
	}
	r := run(t, "device", "add", "--id", "d3", "--hardware", "esp32", "--version", "1.0.3", "--keys-h", filepath.Join(dir, "k3.h"),
		"--keys", keyDir, "--device-url", "http://10.1.2.3:8080")
	if r.code != 0 || strings.Contains(r.stderr, "loopback") {
		t.Fatalf("exit %d, stderr %s", r.code, r.stderr)
	}
}

func TestPublishListStatus(t *testing.T) {
	dir, keyDir := adminEnv(t)
	fw := filepath.Join(dir, "app.bin")
	b := filepath.Join(dir, "app.fota")
	run(t, "release", "build", "--keys", keyDir, "-o", b, fw).expect(t, 0, "built", "")
	run(t, "release", "publish", b).expect(t, 0, "published ecowatt 1.0.4 for esp32", "")
	run(t, "release", "publish", b).expect(t, 1, "", "409")
	run(t, "release", "list").expect(t, 0, "1.0.4", "")
	run(t, "device", "assign", "--id", "nobody", "--version", "1.0.4").expect(t, 1, "", "unknown device")
	run(t, "status").expect(t, 0, "0 update session(s) in progress", "")
	run(t, "release", "publish", "--token", "fota_wrong", b).expect(t, 1, "", "admin token is not valid")
	t.Setenv("FOTA_SERVER", "")
	run(t, "release", "list").expect(t, 2, "", "no server given")
}

func TestLoad(t *testing.T) {
	dir, keyDir := adminEnv(t)
	prof := filepath.Join(dir, "load.prof")
	run(t, "load", "--keys", keyDir, "--devices", "3", "--release-size", "16KiB", "--verify", "hmac", "--cpuprofile", prof).
		expect(t, 0, "updates completed             3\n", "")
	if st, err := os.Stat(prof); err != nil || st.Size() == 0 {
		t.Fatalf("no CPU profile written: %v", err)
	}
	run(t, "load", "--keys", keyDir, "--devices", "2", "--release-size", "8KiB", "--api", "ecowatt").expect(t, 0, "updates completed             2\nupdates failed                0\n", "")
	run(t, "load", "--keys", keyDir, "--verify", "hmac", "--api", "ecowatt").expect(t, 2, "", "--verify hmac needs --api native")
	run(t, "load", "--keys", keyDir, "--verify", "some").expect(t, 2, "", `--verify "some": want full or hmac`)
}

func TestDeviceAPIPolicy(t *testing.T) {
	dir, keyDir := adminEnv(t)
	cred := filepath.Join(dir, "dev.json")
	run(t, "device", "add", "--id", "n1", "--hardware", "esp32", "--version", "1.0.3", "--credentials", cred).
		expect(t, 0, "API native", "")
	run(t, "device", "add", "--id", "e1", "--hardware", "esp32", "--version", "1.0.3", "--api", "carrier-pigeon",
		"--credentials", filepath.Join(dir, "e1.json")).expect(t, 2, "", "want native, ecowatt or both")
	run(t, "device", "add", "--id", "e1", "--hardware", "esp32", "--version", "1.0.3", "--api", "ecowatt",
		"--credentials", filepath.Join(dir, "e1.json")).expect(t, 0, "API ecowatt", "")
	run(t, "device", "list").expect(t, 0, "API", "")
	out := run(t, "device", "list")
	for _, want := range []string{"n1", "native", "e1", "ecowatt"} {
		if !strings.Contains(out.stdout, want) {
			t.Fatalf("device list lacks %q:\n%s", want, out.stdout)
		}
	}
	run(t, "device", "set", "--id", "n1", "--api", "both").expect(t, 0, "API policy both", "")
	run(t, "device", "show", "--id", "n1").expect(t, 0, "API both", "")
	run(t, "device", "show", "--id", "n1").expect(t, 0, "api-policy", "")
	run(t, "device", "set", "--id", "n1").expect(t, 2, "", "--id and --api are required")
	run(t, "device", "set", "--id", "nobody", "--api", "both").expect(t, 1, "", "unknown device")
	run(t, "device", "backoff", "--id", "e1").expect(t, 0, "HELD BACK UNTIL", "")
	run(t, "device", "backoff", "--id", "e1", "--clear").expect(t, 0, "0 backoff(s) cleared", "")

	// --ecowatt-keys: the original firmware's key files, and the ecowatt
	// policy unless --api says otherwise.
	project := filepath.Join(dir, "EcoWatt")
	run(t, "device", "add", "--id", "fw1", "--hardware", "esp32", "--version", "1.0.3", "--ecowatt-keys", project).
		expect(t, 2, "", "--ecowatt-keys need --keys DIR")
	run(t, "device", "add", "--id", "fw1", "--hardware", "esp32", "--version", "1.0.3", "--ecowatt-keys", project,
		"--keys", keyDir, "--api", "native").expect(t, 2, "", "speaks only the EcoWatt API")
	run(t, "device", "add", "--id", "fw1", "--hardware", "esp32", "--version", "1.0.3", "--ecowatt-keys", project,
		"--keys", keyDir).expect(t, 0, "API ecowatt", "")
	for _, p := range keys.EcoWattKeyPaths(project) {
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v", p, err)
		}
	}
	src, _ := os.ReadFile(keys.EcoWattKeyPaths(project)[1])
	if !strings.Contains(string(src), "const char* HMAC_PSK") {
		t.Fatalf("keys.cpp:\n%s", src)
	}
	// Existing key files are refused before the device is registered.
	run(t, "device", "add", "--id", "fw2", "--hardware", "esp32", "--version", "1.0.3", "--ecowatt-keys", project,
		"--keys", keyDir).expect(t, 1, "", "already exists")
	run(t, "device", "show", "--id", "fw2").expect(t, 1, "", "unknown device")
}

// A chunk size the original EcoWatt firmware cannot take makes a release
// native-only; build, inspect and publish each say so.
func TestNativeOnlyChunkSize(t *testing.T) {
	dir, keyDir := adminEnv(t)
	fw := filepath.Join(dir, "app.bin")
	b := filepath.Join(dir, "big-chunks.fota")
	run(t, "release", "build", "--keys", keyDir, "--chunk-size", "4096", "-o", b, fw).
		expect(t, 0, "built", "is native-only: its 4096-byte chunks are larger than the 1024 bytes")
	run(t, "release", "inspect", b).expect(t, 0, "ecowatt api     no: release 1.0.4 has 4096-byte chunks", "")
	run(t, "release", "publish", b).expect(t, 0, "served on the native API only: release 1.0.4 has 4096-byte chunks", "")

	small := filepath.Join(dir, "small-chunks.fota")
	r := run(t, "release", "build", "--keys", keyDir, "--chunk-size", "1024", "--version", "1.0.5", "--force", "-o", small, fw)
	if r.code != 0 || strings.Contains(r.stderr, "native-only") {
		t.Fatalf("1024-byte chunks: exit %d, stderr %s", r.code, r.stderr)
	}
	run(t, "release", "inspect", small).expect(t, 0, "ecowatt api     yes", "")
}

// release build says when long notes make a manifest the C client's
// smallest work buffer cannot take, and not otherwise.
func TestBuildWarnsOfLongNotes(t *testing.T) {
	dir, keyDir := adminEnv(t)
	fw := filepath.Join(dir, "app.bin")
	run(t, "release", "build", "--keys", keyDir, "--notes", strings.Repeat("n", 1200), "-o", filepath.Join(dir, "long.fota"), fw).
		expect(t, 0, "built", "devices running the C client (clients/c) with the default 4 KiB work buffer take manifests up to 1536 bytes")
	r := run(t, "release", "build", "--keys", keyDir, "--notes", "fixes the inverter poll", "-o", filepath.Join(dir, "short.fota"), fw)
	if r.code != 0 || strings.Contains(r.stderr, "C client") {
		t.Fatalf("short notes: exit %d, stderr %s", r.code, r.stderr)
	}
}

// release build says when EcoWatt-API devices cannot take what it built.
func TestBuildSaysWhatEcoWattDevicesRefuse(t *testing.T) {
	dir, keyDir, _ := setup(t)
	fw := filepath.Join(dir, "app.bin")
	ecKeys := filepath.Join(dir, "keys-ec")
	run(t, "keys", "init", "--dir", ecKeys, "--alg", "ecdsa-p256").expect(t, 0, "", "")
	run(t, "release", "build", "--keys", ecKeys, "-o", filepath.Join(dir, "ec.fota"), fw).
		expect(t, 0, "built", "is native-only: release 1.0.4 is signed with ecdsa-p256 and has no legacy RSA signature")
	out := run(t, "release", "inspect", "--json", filepath.Join(dir, "ec.fota"))
	if !strings.Contains(out.stdout, `"legacy_api": false`) || !strings.Contains(out.stdout, `"native_only_reason": "release 1.0.4 is signed with ecdsa-p256`) {
		t.Fatalf("inspect --json:\n%s", out.stdout)
	}
	raw := filepath.Join(dir, "raw.bin")
	os.WriteFile(raw, make([]byte, 5000), 0o644)
	run(t, "release", "build", "--keys", keyDir, "--version", "2.0.0", "--hardware", "esp32", "-o", filepath.Join(dir, "raw.fota"), raw).
		expect(t, 0, "built", "not an ESP32 app image, so fota devices on the EcoWatt API")
	run(t, "release", "build", "--keys", keyDir, "--version", "9.9.9", "--force", "-o", filepath.Join(dir, "relabel.fota"), fw).
		expect(t, 0, "built", "--force overrode the app descriptor (1.0.4 for esp32)")
	out = run(t, "release", "build", "--keys", keyDir, "-o", filepath.Join(dir, "plain.fota"), fw)
	if out.code != 0 || strings.Contains(out.stderr, "warning") {
		t.Fatalf("a plain ESP32 build warned: %d %s", out.code, out.stderr)
	}
	if out := run(t, "release", "inspect", "--json", filepath.Join(dir, "plain.fota")); !strings.Contains(out.stdout, `"legacy_api": true`) {
		t.Fatalf("inspect --json:\n%s", out.stdout)
	}
}

// A project path that cannot take the key files is refused before the
// device is registered.
func TestEcoWattKeysBadProjectRefusedFirst(t *testing.T) {
	dir, keyDir := adminEnv(t)
	notAFolder := filepath.Join(dir, "platformio-file")
	os.WriteFile(notAFolder, []byte("x"), 0o644)
	run(t, "device", "add", "--id", "lost1", "--hardware", "esp32", "--version", "1.0.3", "--credentials", filepath.Join(dir, "lost1.json"),
		"--ecowatt-keys", notAFolder, "--keys", keyDir).expect(t, 1, "", "is not a folder")
	run(t, "device", "show", "--id", "lost1").expect(t, 1, "", "unknown device")
	if _, err := os.Stat(filepath.Join(dir, "lost1.json")); err == nil {
		t.Fatal("credentials written for a device that was not registered")
	}
	project := filepath.Join(dir, "proj")
	os.MkdirAll(filepath.Join(project, "include"), 0o755)
	os.WriteFile(filepath.Join(project, "include", "application"), []byte("x"), 0o644)
	run(t, "device", "add", "--id", "lost2", "--hardware", "esp32", "--version", "1.0.3", "--credentials", filepath.Join(dir, "lost2.json"),
		"--ecowatt-keys", project, "--keys", keyDir).expect(t, 1, "", "application is not a folder")
	run(t, "device", "show", "--id", "lost2").expect(t, 1, "", "unknown device")
}

// Publishing the firmware image instead of its bundle says what to do.
func TestPublishRawImageSaysBuildFirst(t *testing.T) {
	dir, _ := adminEnv(t)
	run(t, "release", "publish", filepath.Join(dir, "app.bin")).
		expect(t, 1, "", "is not a fota bundle\nfota: hint: build one from the firmware first: fota release build")
}

func TestTokenCommands(t *testing.T) {
	dir, _ := adminEnv(t)
	admin := os.Getenv("FOTA_TOKEN")
	// --help never shows the token's value, only where it comes from.
	out := run(t, "device", "list", "--help")
	if strings.Contains(out.stdout, admin) || !strings.Contains(out.stdout, "$FOTA_TOKEN") {
		t.Fatalf("--help with FOTA_TOKEN set:\n%s", out.stdout)
	}
	if strings.Count(out.stdout, "(default $FOTA_TOKEN)") != 1 || strings.Contains(out.stdout, `(default "`) {
		t.Fatalf("--help shows a default twice or a value:\n%s", out.stdout)
	}
	// Over the admin API.
	run(t, "token", "create").expect(t, 2, "", "--name is required")
	run(t, "token", "create", "--name", "x", "--expires", "-1h").expect(t, 2, "", "longer than 0")
	run(t, "token", "create", "--name", "x", "--expires", "400d").expect(t, 2, "", "at most 366d")
	out = run(t, "token", "create", "--name", "prom", "--scope", "metrics", "--expires", "30d")
	prom := strings.TrimSpace(out.stdout)
	if out.code != 0 || !strings.HasPrefix(prom, "fota_") {
		t.Fatalf("token create: %d %q %s", out.code, out.stdout, out.stderr)
	}
	run(t, "token", "create", "--name", "prom").expect(t, 1, "", "exists already")
	run(t, "token", "create", "--name", "x", "--scope", "root").expect(t, 2, "", "want admin, read or metrics")
	out = run(t, "token", "list")
	for _, want := range []string{"prom", "metrics", "in force", "test"} {
		if !strings.Contains(out.stdout, want) {
			t.Fatalf("token list lacks %q:\n%s", want, out.stdout)
		}
	}
	if strings.Contains(out.stdout, prom) || strings.Contains(out.stdout, admin) {
		t.Fatalf("token list shows a token's text:\n%s", out.stdout)
	}
	// A metrics token cannot list devices.
	t.Setenv("FOTA_TOKEN", prom)
	run(t, "device", "list").expect(t, 1, "", "has scope metrics; this needs read")
	t.Setenv("FOTA_TOKEN", admin)
	run(t, "token", "revoke", "prom").expect(t, 0, "token prom revoked", "")
	run(t, "token", "revoke", "prom").expect(t, 1, "", "revoked already")
	run(t, "token", "revoke").expect(t, 2, "", "exactly one token name")
	t.Setenv("FOTA_TOKEN", prom)
	run(t, "device", "list").expect(t, 1, "", `token "prom" was revoked`)
	t.Setenv("FOTA_TOKEN", admin)
	// On the server's machine, with --data: how the first tokens are made.
	data := filepath.Join(dir, "data")
	out = run(t, "token", "create", "--data", data, "--name", "local-ci")
	if out.code != 0 || !strings.HasPrefix(out.stdout, "fota_") {
		t.Fatalf("token create --data: %d %s %s", out.code, out.stdout, out.stderr)
	}
	run(t, "token", "list", "--data", data).expect(t, 0, "local-ci", "")
	run(t, "token", "revoke", "--data", data, "local-ci").expect(t, 0, "revoked", "")
	run(t, "device", "show", "--id", "nobody").expect(t, 1, "", "unknown device")
	out = run(t, "status", "--events", "50")
	if !strings.Contains(out.stdout, "token-revoked") || !strings.Contains(out.stdout, "token:test") {
		t.Fatalf("events do not show who revoked:\n%s", out.stdout)
	}
}
