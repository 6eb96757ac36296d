// Package cclient_test builds the C client (clients/c) with the system's C
// compiler and mbedtls, and runs it as a device against a real fota
// server: updates, SIGKILL, power cuts at every persistent operation, and
// the agent's attack table.
package cclient_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/testserver"
	"github.com/ecowatt/fota/protocol"
)

// Exit codes of fota-device-c run --once (ports/posix/fota_device.c).
const (
	exitIdle     = 0
	exitError    = 1
	exitUsage    = 2
	exitBricked  = 3
	exitReboot   = 10
	exitPowerCut = 99
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error

	fullOnce     sync.Once
	fullBuildDir string
	fullBuildErr error
)

// requireTool returns the path of a tool the tests need. Without it the
// test is skipped on a developer's machine and fails in CI (CI=true),
// where .ci/run installs it.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is needed and missing: .ci/run installs it", name)
		}
		t.Skipf("%s not installed (apt-get install gcc libmbedtls-dev)", name)
	}
	return p
}

// srcDir is clients/c, where this file is.
func srcDir(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// build compiles the library, the POSIX device program and the vector
// test once per test binary, into a temporary folder, with delta updates
// (the Makefile's FOTA_DELTA=1); buildFull without them.
//
// FOTA_C_MAKEFLAGS, when set, is split on spaces and appended to the make
// command as variable assignments, to build against another mbedtls (or
// compiler) than the system's, e.g. an mbedtls 3.x source tree:
//
//	FOTA_C_MAKEFLAGS="MBEDTLS_CFLAGS=-I/x/include MBEDTLS_LIBS=/x/library/libmbedcrypto.a" go test ./clients/c
//
// No quoting: a value cannot hold a space. With it set, a build that fails
// fails the test rather than skipping it.
func build(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() { buildDir, buildErr = makeBuild(t, "FOTA_DELTA=1", "all") })
	return built(t, buildDir, buildErr)
}

// buildFull builds fota-device-c without delta updates (FOTA_DELTA=0): the
// library as firmware that does not link fota_delta.c has it.
func buildFull(t testing.TB) string {
	t.Helper()
	fullOnce.Do(func() { fullBuildDir, fullBuildErr = makeBuild(t, "FOTA_DELTA=0", "fota-device-c") })
	return built(t, fullBuildDir, fullBuildErr)
}

func makeBuild(t testing.TB, delta, target string) (string, error) {
	requireTool(t, "cc")
	requireTool(t, "make")
	dir, err := os.MkdirTemp("", "fota-c-build-")
	if err != nil {
		return "", err
	}
	args := []string{"-s", "-C", srcDir(t), "BUILD=" + dir, delta}
	args = append(args, strings.Fields(os.Getenv("FOTA_C_MAKEFLAGS"))...)
	out, err := exec.Command("make", append(args, target)...).CombinedOutput()
	if err != nil {
		return dir, fmt.Errorf("make %s: %v\n%s", delta, err, out)
	}
	return dir, nil
}

func built(t testing.TB, dir string, err error) string {
	t.Helper()
	if err != nil {
		if strings.Contains(err.Error(), "mbedtls/") && os.Getenv("CI") == "" && os.Getenv("FOTA_C_MAKEFLAGS") == "" {
			t.Skipf("mbedtls headers missing (apt-get install libmbedtls-dev): %v", err)
		}
		t.Fatal(err)
	}
	return dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, dir := range []string{buildDir, fullBuildDir} {
		if dir != "" {
			os.RemoveAll(dir)
		}
	}
	os.Exit(code)
}

// cdev is one device running the C client: its state folder (slots, boot
// state, key-value store) and key files.
type cdev struct {
	t      testing.TB
	srv    *testserver.Server
	bin    string
	id     string
	psk    protocol.PSK
	dir    string
	server string // the URL the device talks to (the server, or a MITM before it)
	extra  []string
	// last run's output
	stdout, stderr string
}

const factoryVersion = "1.0.3"

// newCDev registers a native device on 1.0.3 and formats its storage with
// a factory image of that version and the given security counter.
func newCDev(t testing.TB, srv *testserver.Server, id string, slotSize int, counter uint32) *cdev {
	t.Helper()
	return newCDevOn(t, srv, id, slotSize, counter, factoryImage(t, counter))
}

// newCDevOn is newCDev with the given factory image (of factoryVersion).
func newCDevOn(t testing.TB, srv *testserver.Server, id string, slotSize int, counter uint32, factory []byte) *cdev {
	t.Helper()
	bin := filepath.Join(build(t), "fota-device-c")
	psk := srv.AddDeviceAPI(id, factoryVersion, "native")
	dir := t.TempDir()
	d := &cdev{t: t, srv: srv, bin: bin, id: id, psk: psk, dir: filepath.Join(dir, "state"), server: srv.URL}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("psk", []byte(psk.Hex()))
	write("signing.pub", srv.Signer.Public().PEM())
	write("firmware.key", srv.FWKey[:])
	write("factory.bin", factory)
	code := d.exec("format", "--state", d.dir, "--slot-size", strconv.Itoa(slotSize), "--factory",
		filepath.Join(dir, "factory.bin"), "--version", factoryVersion, "--counter", strconv.Itoa(int(counter)))
	if code != 0 {
		t.Fatalf("format: exit %d\n%s%s", code, d.stdout, d.stderr)
	}
	return d
}

// useFullBuild makes the device run the build without delta updates.
func (d *cdev) useFullBuild() { d.bin = filepath.Join(buildFull(d.t), "fota-device-c") }

func (d *cdev) keyFile(name string) string { return filepath.Join(filepath.Dir(d.dir), name) }

func (d *cdev) exec(args ...string) int {
	d.t.Helper()
	cmd := exec.Command(d.bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	d.stdout, d.stderr = out.String(), errb.String()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode()
	default:
		d.t.Fatalf("fota-device-c %v: %v", args, err)
		return -1
	}
}

// runArgs are the arguments of one power-on.
func (d *cdev) runArgs(extra ...string) []string {
	args := []string{"run", "--once", "--state", d.dir, "--server", d.server, "--device-id", d.id,
		"--psk-file", d.keyFile("psk"), "--public-key", d.keyFile("signing.pub"),
		"--firmware-key", d.keyFile("firmware.key"), "--hardware", "esp32"}
	args = append(args, d.extra...)
	return append(args, extra...)
}

// powerOn runs the device once: boot, self-test, check; returns its exit code.
func (d *cdev) powerOn(extra ...string) int {
	d.t.Helper()
	return d.exec(d.runArgs(extra...)...)
}

// bootLine is what the device printed about its boot.
type bootLine struct {
	slot    int
	version string
	trial   bool
	counter uint32
}

func (d *cdev) boot() (bootLine, bool) {
	for _, line := range strings.Split(d.stdout, "\n") {
		if !strings.HasPrefix(line, "boot ") {
			continue
		}
		f := fields(line)
		slot, _ := strconv.Atoi(f["slot"])
		counter, _ := strconv.Atoi(f["counter"])
		return bootLine{slot: slot, version: f["version"], trial: f["trial"] == "1", counter: uint32(counter)}, true
	}
	return bootLine{}, false
}

// errorCode is the fota_err_t name the device printed, or "".
func (d *cdev) errorCode() string {
	for _, line := range strings.Split(d.stdout, "\n") {
		if strings.HasPrefix(line, "error ") {
			return fields(line)["code"]
		}
	}
	return ""
}

// ops is the number of persistent operations the last run did.
func (d *cdev) ops() int {
	sc := bufio.NewScanner(strings.NewReader(d.stderr))
	n := -1
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ops "); ok {
			n, _ = strconv.Atoi(v)
		}
	}
	return n
}

func fields(line string) map[string]string {
	m := map[string]string{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			m[k] = v
		}
	}
	return m
}

// slotDigest is the SHA-256 of a slot file's first n bytes (all if n < 0).
func (d *cdev) slotDigest(slot, n int) [32]byte {
	data, _ := os.ReadFile(filepath.Join(d.dir, fmt.Sprintf("slot%d.bin", slot)))
	if n >= 0 && n < len(data) {
		data = data[:n]
	}
	return sha256.Sum256(data)
}

func (d *cdev) slot(slot int) []byte {
	data, _ := os.ReadFile(filepath.Join(d.dir, fmt.Sprintf("slot%d.bin", slot)))
	return data
}

// settle powers the device on until it runs a confirmed image and has
// nothing to install, at most 10 times; it returns the boots it saw.
func (d *cdev) settle(images map[string][]byte) []bootLine {
	d.t.Helper()
	var boots []bootLine
	for i := 0; i < 10; i++ {
		code := d.powerOn()
		b, ok := d.boot()
		if code == exitBricked || !ok {
			d.t.Fatalf("bricked (exit %d):\n%s%s", code, d.stdout, d.stderr)
		}
		boots = append(boots, b)
		if img, ok := images[b.version]; images != nil && (!ok || !bytes.HasPrefix(d.slot(b.slot), img)) {
			d.t.Fatalf("boot %d ran an image that is not a signed release (%s)", i, b.version)
		}
		switch code {
		case exitIdle:
			if !b.trial {
				return boots
			}
		case exitReboot:
		case exitError:
			// The device refusing a release it rolled back from is right;
			// anything else is not.
			if c := d.errorCode(); c != "FOTA_ERR_ROLLED_BACK" {
				d.t.Fatalf("boot %d: error %q:\n%s%s", i, c, d.stdout, d.stderr)
			}
			return boots
		default:
			d.t.Fatalf("boot %d: exit %d:\n%s%s", i, code, d.stdout, d.stderr)
		}
	}
	d.t.Fatalf("device did not settle in 10 boots:\n%s%s", d.stdout, d.stderr)
	return nil
}

func factoryImage(t testing.TB, counter uint32) []byte {
	img, err := firmware.Sample(firmware.SampleOptions{Version: factoryVersion, SecureVersion: counter})
	if err != nil {
		t.Fatal(err)
	}
	return img
}
