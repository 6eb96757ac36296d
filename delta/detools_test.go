package delta

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestDetoolsCApplier applies Create's patches with detools' own C applier,
// the code esp_delta_ota runs on the devices. It needs that applier built
// (c/main.c, c/detools.c and c/heatshrink from github.com/eerimoq/detools):
//
//	gcc -DDETOOLS_CONFIG_COMPRESSION_LZMA=0 -Ic -Ic/heatshrink c/main.c c/detools.c \
//	    c/heatshrink/heatshrink_decoder.c -o detools-apply
//	FOTA_DETOOLS_APPLY=$PWD/detools-apply go test ./delta -run Detools
func TestDetoolsCApplier(t *testing.T) {
	bin := os.Getenv("FOTA_DETOOLS_APPLY")
	if bin == "" {
		t.Skip("set FOTA_DETOOLS_APPLY to detools' C apply program to check compatibility")
	}
	dir := t.TempDir()
	for i, p := range pairs() {
		patch, err := Create(p.from, p.to, CreateOptions{})
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		from := filepath.Join(dir, "from")
		pf := filepath.Join(dir, "patch")
		to := filepath.Join(dir, "to")
		os.Remove(to)
		if err := os.WriteFile(from, p.from, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(pf, patch, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "apply_patch", from, pf, to).CombinedOutput()
		if err != nil {
			t.Errorf("%d %s: detools refused the patch: %v: %s", i, p.name, err, out)
			continue
		}
		got, err := os.ReadFile(to)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, p.to) {
			t.Errorf("%d %s: detools made %d bytes, want %d (equal: false)", i, p.name, len(got), len(p.to))
		}
	}
}
