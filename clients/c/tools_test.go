package cclient_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecowatt/fota/internal/cli"
	"github.com/ecowatt/fota/internal/testserver"
)

// TestSize cross-compiles the library for an ESP32-C3 (rv32imc, -Os) and
// holds it to its targets: code <= 16 KiB, static data <= 1 KiB, work
// buffer + client + worst stack <= 8 KiB (scripts/size.sh --check).
func TestSize(t *testing.T) {
	requireTool(t, "riscv64-unknown-elf-gcc")
	out, err := exec.Command("bash", filepath.Join(srcDir(t), "scripts", "size.sh"), "--check").CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("size.sh --check: %v", err)
	}
}

// TestLibraryNeverAllocates: no object of the library refers to malloc,
// calloc, realloc or free (mbedtls allocates inside its public-key code,
// which is mbedtls's, see README.md).
func TestLibraryNeverAllocates(t *testing.T) {
	dir := build(t)
	requireTool(t, "nm")
	out, err := exec.Command("nm", "-u", filepath.Join(dir, "libfota.a")).CombinedOutput()
	if err != nil {
		t.Fatalf("nm: %v\n%s", err, out)
	}
	undefined := strings.Fields(string(out))
	if len(undefined) < 5 {
		t.Fatalf("nm listed almost nothing: %s", out)
	}
	for _, sym := range undefined {
		switch sym {
		case "malloc", "calloc", "realloc", "free", "mbedtls_calloc", "mbedtls_free":
			t.Errorf("the library calls %s", sym)
		}
	}
}

// TestESPIDFPortCompiles: the ESP-IDF port and its example application
// compile (warnings are errors) against declarations of the ESP-IDF API
// they use, with the keys.h that `fota device add --keys-h` writes for a
// registered device, which the example includes.
func TestESPIDFPortCompiles(t *testing.T) {
	requireTool(t, "cc")
	srv := testserver.New(t)
	dir := t.TempDir()
	keyDir, header := filepath.Join(dir, "keys"), filepath.Join(dir, "keys.h")
	runCLI(t, "keys", "init", "--dir", keyDir)
	runCLI(t, "device", "add", "--server", srv.URL, "--token", srv.Token, "--id", "esp-1", "--hardware", "esp32",
		"--version", "1.0.3", "--keys-h", header, "--keys", keyDir)
	cmd := exec.Command("sh", filepath.Join(srcDir(t), "ports", "esp-idf", "test", "check.sh"), header)
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("check.sh: %v", err)
	}
}

func runCLI(t *testing.T, args ...string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := cli.Run(context.Background(), args, strings.NewReader(""), &stdout, &stderr); code != 0 {
		t.Fatalf("fota %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	}
}
