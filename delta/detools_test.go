//go:build detools

// These tests need detools' C applier, which is not part of this
// repository nor of Debian: they are built only with -tags detools.

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
//	FOTA_DETOOLS_APPLY=$PWD/detools-apply go test -tags detools ./delta -run Detools
func TestDetoolsCApplier(t *testing.T) {
	bin := os.Getenv("FOTA_DETOOLS_APPLY")
	if bin == "" {
		t.Fatal("set FOTA_DETOOLS_APPLY to detools' C apply program (see above)")
	}
	dir := t.TempDir()
	for i, p := range allCompressions(pairs()) {
		patch, err := Create(p.from, p.to, CreateOptions{Compression: p.kind})
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
			t.Errorf("%d %s (%s): detools refused the patch: %v: %s", i, p.name, p.kind, err, out)
			continue
		}
		got, err := os.ReadFile(to)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, p.to) {
			t.Errorf("%d %s (%s): detools made %d bytes, want %d (equal: false)", i, p.name, p.kind, len(got), len(p.to))
		}
	}
}

// TestVectorsDetools runs the success vectors through detools' C applier
// (see TestDetoolsCApplier).
func TestVectorsDetools(t *testing.T) {
	bin := os.Getenv("FOTA_DETOOLS_APPLY")
	if bin == "" {
		t.Fatal("set FOTA_DETOOLS_APPLY to detools' C apply program (see TestDetoolsCApplier)")
	}
	dir := t.TempDir()
	for _, v := range readVectors(t) {
		if v.expect != "success" {
			continue
		}
		from, patch, to := filepath.Join(dir, v.name+".from"), filepath.Join(dir, v.name+".patch"), filepath.Join(dir, v.name+".to")
		if err := os.WriteFile(from, v.from, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(patch, v.patch, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, "apply_patch", from, patch, to).CombinedOutput(); err != nil {
			t.Errorf("%s: detools refused it: %v: %s", v.name, err, out)
			continue
		}
		got, _ := os.ReadFile(to)
		if !bytes.Equal(got, v.to) {
			t.Errorf("%s: detools made %x, want %x", v.name, got, v.to)
		}
	}
}

type kindPair struct {
	pair
	kind string
}

// allCompressions is every pair under every compression detools' C applier
// takes.
func allCompressions(ps []pair) []kindPair {
	var out []kindPair
	for _, kind := range []string{"none", "crle", "heatshrink"} {
		for _, p := range ps {
			out = append(out, kindPair{p, kind})
		}
	}
	return out
}
