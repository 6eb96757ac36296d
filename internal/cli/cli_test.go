package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecowatt/fota/esp32"
)

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), args, strings.NewReader(""), &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

// expect checks the exit code and that stdout and stderr contain the given
// fragments ("" skips a check).
func (r result) expect(t *testing.T, code int, stdout, stderr string) {
	t.Helper()
	if r.code != code || !strings.Contains(r.stdout, stdout) || !strings.Contains(r.stderr, stderr) {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s\nwant stdout containing %q and stderr containing %q",
			r.code, code, r.stdout, r.stderr, stdout, stderr)
	}
}

// setup makes keys and a 1.0.4 sample image in a temp folder.
func setup(t *testing.T) (dir, keyDir, fw string) {
	dir = t.TempDir()
	keyDir = filepath.Join(dir, "keys")
	fw = filepath.Join(dir, "app.bin")
	run(t, "keys", "init", "--dir", keyDir).expect(t, 0, "key id", "")
	run(t, "firmware", "sample", "--version", "1.0.4", "--security-counter", "3", "--size", "64KiB", "-o", fw).expect(t, 0, "wrote", "")
	return dir, keyDir, fw
}

func dirEntries(t *testing.T, dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestTopLevel(t *testing.T) {
	run(t).expect(t, 2, "", "Commands:")
	run(t, "help").expect(t, 0, "fota release build", "")
	run(t, "--version").expect(t, 0, "fota ", "")
	run(t, "frobnicate").expect(t, 2, "", "fota: error: unknown command \"frobnicate\"\nfota: hint:")
	run(t, "release").expect(t, 2, "", "needs a subcommand")
	run(t, "release", "sign").expect(t, 2, "", "unknown command 'fota release sign'")
	run(t, "release", "build", "--help").expect(t, 0, "Examples:", "")
	run(t, "release", "build", "--bogus").expect(t, 2, "", "flag provided but not defined: -bogus")
}

func TestKeysInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	run(t, "keys", "init").expect(t, 2, "", "--dir is required")
	run(t, "keys", "init", "--dir", dir, "--alg", "dsa").expect(t, 2, "", "--alg \"dsa\"")
	run(t, "keys", "init", "--dir", dir, "--alg", "ecdsa-p256").expect(t, 0, "(ecdsa-p256)", "")
	before, _ := os.ReadFile(filepath.Join(dir, "signing.key"))
	run(t, "keys", "init", "--dir", dir).expect(t, 1, "", "use --force")
	after, _ := os.ReadFile(filepath.Join(dir, "signing.key"))
	if !bytes.Equal(before, after) {
		t.Fatal("refused keys init changed signing.key")
	}
	run(t, "keys", "init", "--dir", dir, "--force").expect(t, 0, "(rsa-2048)", "")
	header, _ := os.ReadFile(filepath.Join(dir, "keys.h"))
	for _, sym := range []string{"SERVER_PUBLIC_KEY", "AES_FIRMWARE_KEY"} {
		if !bytes.Contains(header, []byte(sym)) {
			t.Errorf("keys.h lacks %s", sym)
		}
	}
}

func TestBuildVerifyExtractInspect(t *testing.T) {
	dir, keyDir, fw := setup(t)
	bundlePath := filepath.Join(dir, "app.fota")
	// Version, chip, project and counter all come from the app descriptor.
	run(t, "release", "build", "--keys", keyDir, "-o", bundlePath, fw).
		expect(t, 0, "built "+bundlePath+": ecowatt 1.0.4 for esp32, 65536 bytes firmware, 65 chunks of 1024, security counter 3", "")
	run(t, "release", "build", "--keys", keyDir, "-o", bundlePath, fw).expect(t, 1, "", "already exists")

	out := filepath.Join(dir, "out.bin")
	run(t, "release", "verify", "--pub", filepath.Join(keyDir, "signing.pub"), "--firmware-key", filepath.Join(keyDir, "firmware.key"),
		"--extract", out, bundlePath).expect(t, 0, "ok "+bundlePath+": ecowatt 1.0.4 for esp32", "")
	want, _ := os.ReadFile(fw)
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatal("extracted firmware differs")
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
		t.Fatalf("extracted firmware has mode %04o, want 0600", st.Mode().Perm())
	}
	// Flags after the bundle work too.
	run(t, "release", "verify", bundlePath, "--keys", keyDir).expect(t, 0, "plaintext size and sha256", "")

	r := run(t, "release", "inspect", bundlePath)
	r.expect(t, 0, "version         1.0.4", "")
	r.expect(t, 0, "NOT VERIFIED", "")
	r = run(t, "release", "inspect", "--json", bundlePath)
	var in inspection
	if err := json.Unmarshal([]byte(r.stdout), &in); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, r.stdout)
	}
	if in.Manifest.Version != "1.0.4" || !in.Complete || in.Chunks != 65 || in.LegacySignature == "" {
		t.Fatalf("inspect --json: %+v", in)
	}
}

func TestBuildDefaultsOutputName(t *testing.T) {
	_, keyDir, fw := setup(t)
	t.Chdir(t.TempDir())
	run(t, "release", "build", "--keys", keyDir, fw).expect(t, 0, "built ecowatt-1.0.4.fota", "")
	if _, err := os.Stat("ecowatt-1.0.4.fota"); err != nil {
		t.Fatal(err)
	}
}

func TestBuildDescriptorConflicts(t *testing.T) {
	dir, keyDir, fw := setup(t)
	o := filepath.Join(dir, "x.fota")
	run(t, "release", "build", "--keys", keyDir, "--version", "1.0.5", "-o", o, fw).expect(t, 1, "", "--version 1.0.5 disagrees with the image's app descriptor, which says \"1.0.4\"")
	run(t, "release", "build", "--keys", keyDir, "--hardware", "esp32s3", "-o", o, fw).expect(t, 1, "", "--hardware esp32s3 disagrees")
	run(t, "release", "build", "--keys", keyDir, "--security-counter", "1", "-o", o, fw).expect(t, 1, "", "--security-counter 1 disagrees")
	if _, err := os.Stat(o); err == nil {
		t.Fatal("a refused build left a bundle")
	}
	run(t, "release", "build", "--keys", keyDir, "--version", "1.0.5", "--force", "-o", o, fw).expect(t, 0, "ecowatt 1.0.5", "")
}

func TestBuildPlainFile(t *testing.T) {
	dir, keyDir, _ := setup(t)
	plain := filepath.Join(dir, "blob.bin")
	os.WriteFile(plain, bytes.Repeat([]byte{7}, 5000), 0o644)
	o := filepath.Join(dir, "blob.fota")
	run(t, "release", "build", "--keys", keyDir, "-o", o, plain).expect(t, 1, "", "fota: hint: pass --version and --hardware")
	run(t, "release", "build", "--keys", keyDir, "--version", "1.0", "--hardware", "esp32", "-o", o, plain).expect(t, 1, "", "not a semantic version")
	run(t, "release", "build", "--keys", keyDir, "--version", "2.0.0-rc.1", "--hardware", "esp32", "-o", o, plain).
		expect(t, 0, "built "+o+": blob 2.0.0-rc.1 for esp32, 5000 bytes", "")

	empty := filepath.Join(dir, "empty.bin")
	os.WriteFile(empty, nil, 0o644)
	eo := filepath.Join(dir, "empty.fota")
	run(t, "release", "build", "--keys", keyDir, "--version", "1.0.0", "--hardware", "esp32", "-o", eo, empty).expect(t, 1, "", "firmware is empty")
	for _, name := range dirEntries(t, dir) {
		if strings.HasPrefix(name, ".") || name == "empty.fota" {
			t.Fatalf("failed build left %s behind", name)
		}
	}
}

func TestBuildKeyProblems(t *testing.T) {
	dir, keyDir, fw := setup(t)
	o := filepath.Join(dir, "x.fota")
	run(t, "release", "build", "-o", o, fw).expect(t, 2, "", "no keys given")
	run(t, "release", "build", "--keys", filepath.Join(dir, "nokeys"), "-o", o, fw).expect(t, 1, "", "no such file or directory")
	pubAsKey := filepath.Join(keyDir, "signing.pub")
	run(t, "release", "build", "--keys", keyDir, "--signing-key", pubAsKey, "-o", o, fw).expect(t, 1, "", "want \"PRIVATE KEY\"")
	os.Chmod(filepath.Join(keyDir, "signing.key"), 0o644)
	run(t, "release", "build", "--keys", keyDir, "-o", o, fw).expect(t, 0, "built", "fota: warning: "+filepath.Join(keyDir, "signing.key")+" is readable by others")
}

func TestVerifyFailures(t *testing.T) {
	dir, keyDir, fw := setup(t)
	bundlePath := filepath.Join(dir, "app.fota")
	run(t, "release", "build", "--keys", keyDir, "-o", bundlePath, fw).expect(t, 0, "built", "")
	otherKeys := filepath.Join(dir, "other")
	run(t, "keys", "init", "--dir", otherKeys).expect(t, 0, "", "")

	run(t, "release", "verify", bundlePath).expect(t, 2, "", "no public key given")
	run(t, "release", "verify", "--pub", filepath.Join(otherKeys, "signing.pub"), bundlePath).expect(t, 1, "", "signed by an untrusted key")
	// Both keys trusted: the manifest's key id picks the right one.
	run(t, "release", "verify", "--pub", filepath.Join(otherKeys, "signing.pub"), "--pub", filepath.Join(keyDir, "signing.pub"), bundlePath).expect(t, 0, "ok", "")

	out := filepath.Join(dir, "out.bin")
	run(t, "release", "verify", "--pub", filepath.Join(keyDir, "signing.pub"), "--firmware-key", filepath.Join(otherKeys, "firmware.key"),
		"--extract", out, bundlePath).expect(t, 1, "", "wrong firmware key?")
	if _, err := os.Stat(out); err == nil {
		t.Fatal("failed --extract left a file")
	}
	run(t, "release", "verify", "--keys", keyDir, "--extract", fw, bundlePath).expect(t, 1, "", "already exists")

	data, _ := os.ReadFile(bundlePath)
	corrupt := filepath.Join(dir, "corrupt.fota")
	data[len(data)-1] ^= 0x80
	os.WriteFile(corrupt, data, 0o644)
	run(t, "release", "verify", "--keys", keyDir, corrupt).expect(t, 1, "", "fota: error: "+corrupt+": ciphertext sha256 mismatch")
	truncated := filepath.Join(dir, "truncated.fota")
	os.WriteFile(truncated, data[:len(data)/2], 0o644)
	run(t, "release", "verify", "--keys", keyDir, truncated).expect(t, 1, "", "truncated bundle")
	run(t, "release", "inspect", truncated).expect(t, 0, "truncated or padded", "")
	run(t, "release", "inspect", fw).expect(t, 1, "", "not a fota bundle")
	for _, name := range dirEntries(t, dir) {
		if strings.HasPrefix(name, ".") {
			t.Fatalf("failed verify left %s behind", name)
		}
	}
}

func TestFirmwareSample(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "fw.bin")
	run(t, "firmware", "sample", "-o", p).expect(t, 2, "", "--version and -o are required")
	run(t, "firmware", "sample", "--version", "1.0.5", "--size", "lots", "-o", p).expect(t, 2, "", "--size")
	run(t, "firmware", "sample", "--version", "1.0.5", "--fail-selftest", "--size", "1MiB", "-o", p).expect(t, 0, "1048576 bytes, fail-selftest", "")
	img, _ := os.ReadFile(p)
	info, err := esp32.Parse(img)
	if err != nil || info.Version != "1.0.5" {
		t.Fatalf("sample: %+v, %v", info, err)
	}
	run(t, "firmware", "sample", "--version", "1.0.5", "-o", p).expect(t, 1, "", "already exists")
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{"": 0, "4096": 4096, "256KiB": 256 << 10, "1MiB": 1 << 20, "2M": 2 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"-1", "0", "x", "1.5MiB", "9GiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

// TestBinary builds the real fota binary and runs the README's quick-start
// steps with it, checking exit codes and the files they leave.
func TestBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "fota")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/fota").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	steps := [][]string{
		{"keys", "init", "--dir", "keys"},
		{"firmware", "sample", "--version", "1.0.4", "-o", "app.bin"},
		{"release", "build", "--keys", "keys", "-o", "app-1.0.4.fota", "app.bin"},
		{"release", "verify", "--keys", "keys", "--extract", "out.bin", "app-1.0.4.fota"},
	}
	for _, s := range steps {
		cmd := exec.Command(bin, s...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("fota %s: %v\n%s", strings.Join(s, " "), err, out)
		}
	}
	cmd := exec.Command(bin, "release", "verify", "--pub", "keys/signing.pub", "missing.fota")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.HasPrefix(string(out), "fota: error: open bundle:") {
		t.Fatalf("missing bundle: %v\n%s", err, out)
	}
}

func TestDemo(t *testing.T) {
	dir := t.TempDir()
	r := run(t, "demo", "--devices", "3", "--size", "32KiB", "--dir", dir)
	r.expect(t, 0, "fota demo: every device did what was expected", "")
	for _, want := range []string{"updated, confirmed", "rolled back 1.0.5 (self-test failed)", "ecowatt-03"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("demo output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Count(r.stdout, "1.0.3  1.0.4  updated, confirmed") != 3 {
		t.Fatalf("not every device updated from 1.0.3:\n%s", r.stdout)
	}
	run(t, "demo", "--devices", "0").expect(t, 2, "", "--devices 0")
}

// Flags are named alike across commands; old spellings still work; stray
// words are an error, not ignored.
func TestFlagNamesAndStrayArguments(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.bin"), filepath.Join(dir, "b.bin")
	run(t, "firmware", "sample", "--version", "1.0.4", "--hardware", "esp32s3", "--security-counter", "2", "-o", a).expect(t, 0, "for esp32s3", "")
	run(t, "firmware", "sample", "--version", "1.0.4", "--chip", "esp32s3", "--secure-version", "2", "-o", b).expect(t, 0, "for esp32s3", "")
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ab, bb) {
		t.Fatal("the old flag names made another image")
	}
	for _, args := range [][]string{
		{"device", "list", "extra"},
		{"device", "show", "--id", "d1", "extra"},
		{"status", "extra"},
		{"release", "list", "extra"},
	} {
		run(t, args...).expect(t, 2, "", "takes no arguments, got [\"extra\"]")
	}
}

// A server that is not there: the error names the address tried and says
// how to set it.
func TestConnectionRefusedSaysWhere(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	run(t, "device", "list", "--server", "http://"+addr, "--token", "fota_x").
		expect(t, 1, "", "nothing answers at http://"+addr+": start 'fota serve' there, or point --server (or FOTA_SERVER)")
}

func TestShownEscapesControlCharacters(t *testing.T) {
	for in, want := range map[string]string{
		"plain text, über": "plain text, über",
		"a\nb":             `a\nb`,
		"x\x1b[8mhidden":   `x\x1b[8mhidden`,
		"cr\rlf":           `cr\rlf`,
	} {
		if got := shown(in); got != want {
			t.Errorf("shown(%q) = %q, want %q", in, got, want)
		}
	}
}
