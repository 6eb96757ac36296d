package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReleaseBuildDeltas: --delta-from takes an earlier bundle, an ESP32
// image and VERSION=IMAGE; inspect lists the deltas with their sizes;
// verify checks each; what cannot make a useful delta is refused or left
// out with a reason.
func TestReleaseBuildDeltas(t *testing.T) {
	dir, keyDir := t.TempDir(), ""
	keyDir = filepath.Join(dir, "keys")
	run(t, "keys", "init", "--dir", keyDir).expect(t, 0, "key id", "")
	img := func(version, lineage string) string {
		p := filepath.Join(dir, version+"-"+lineage+".bin")
		args := []string{"firmware", "sample", "--version", version, "--size", "96KiB", "-o", p}
		if lineage != "" {
			args = append(args, "--lineage", lineage)
		}
		run(t, args...).expect(t, 0, "wrote", "")
		return p
	}
	v102, v103, v104 := img("1.0.2", "line"), img("1.0.3", "line"), img("1.0.4", "line")
	b103 := filepath.Join(dir, "1.0.3.fota")
	run(t, "release", "build", "--keys", keyDir, "-o", b103, v103).expect(t, 0, "built", "")
	c3 := filepath.Join(dir, "c3.bin")
	run(t, "firmware", "sample", "--version", "1.0.3", "--size", "96KiB", "--hardware", "esp32c3", "--lineage", "line", "-o", c3).expect(t, 0, "wrote", "")
	raw := filepath.Join(dir, "raw.bin")
	data, _ := os.ReadFile(v102)
	os.WriteFile(raw, data[32:], 0o644) // no app descriptor at the start: not an ESP32 image
	raw2 := filepath.Join(dir, "raw2.bin")
	data[4000]++
	os.WriteFile(raw2, data[32:], 0o644)

	b104 := filepath.Join(dir, "1.0.4.fota")
	r := run(t, "release", "build", "--keys", keyDir, "--delta-from", b103, "--delta-from", "1.0.1="+raw, "--delta-from", v102, "-o", b104, v104)
	r.expect(t, 0, "delta from 1.0.3", "")
	for _, want := range []string{"delta from 1.0.1", "delta from 1.0.2", "heatshrink patch"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("build output lacks %q:\n%s", want, r.stdout)
		}
	}
	r = run(t, "release", "inspect", b104)
	r.expect(t, 0, "delta           from 1.0.3", "")
	if strings.Count(r.stdout, "delta           from") != 3 || strings.Contains(r.stdout, "WARNING") {
		t.Fatalf("inspect:\n%s", r.stdout)
	}
	r = run(t, "release", "inspect", "--json", b104)
	var in inspection
	if err := json.Unmarshal([]byte(r.stdout), &in); err != nil || len(in.Deltas) != 3 || !in.Complete {
		t.Fatalf("inspect --json: %v, %d deltas, complete %v", err, len(in.Deltas), in.Complete)
	}
	for _, d := range in.Deltas {
		if d.Manifest.Kind != "delta" || d.Manifest.PatchSize <= 0 || d.Manifest.PatchSize*10 > in.Manifest.PlaintextSize {
			t.Fatalf("delta %+v: want a patch under a tenth of the %d-byte image", d.Manifest, in.Manifest.PlaintextSize)
		}
	}
	r = run(t, "release", "verify", "--keys", keyDir, b104)
	r.expect(t, 0, "ok delta from 1.0.3", "")
	if strings.Count(r.stdout, "ok delta from") != 3 {
		t.Fatalf("verify:\n%s", r.stdout)
	}
	// A bundle cut inside its last delta is refused by verify and flagged by inspect.
	whole, _ := os.ReadFile(b104)
	cut := filepath.Join(dir, "cut.fota")
	os.WriteFile(cut, whole[:len(whole)-100], 0o644)
	run(t, "release", "verify", "--keys", keyDir, cut).expect(t, 1, "", "truncated")
	run(t, "release", "inspect", cut).expect(t, 0, "WARNING", "")

	// Refusals.
	out := filepath.Join(dir, "x.fota")
	for _, c := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"the release's own image", []string{"--delta-from", v104}, 2, "same image as the release's own image"},
		{"a base not older", []string{"--delta-from", "1.0.9=" + raw}, 2, "not older than the release's 1.0.4"},
		{"a raw image without a version", []string{"--delta-from", raw}, 1, "--delta-from VERSION=" + raw},
		{"a version the image contradicts", []string{"--delta-from", "1.0.1=" + v102}, 2, "app descriptor says version 1.0.2, not 1.0.1"},
		{"one version twice", []string{"--delta-from", "1.0.1=" + raw, "--delta-from", "1.0.1=" + raw2}, 2, "are both version 1.0.1"},
		{"another chip's image", []string{"--delta-from", c3}, 2, "for esp32c3, the release is ecowatt for esp32"},
		{"a bad version", []string{"--delta-from", "one=" + raw}, 2, "not a version"},
		{"a missing file", []string{"--delta-from", filepath.Join(dir, "nope.bin")}, 1, "no such file"},
		{"an unknown compression", []string{"--delta-from", b103, "--delta-compression", "lzma"}, 2, "want one of heatshrink, crle, none"},
		{"the same base twice", []string{"--delta-from", b103, "--delta-from", "1.0.3=" + v103}, 2, "same image as"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"release", "build", "--keys", keyDir, "--force", "-o", out}, c.args...)
			run(t, append(args, v104)...).expect(t, c.code, "", c.stderr)
			if _, err := os.Stat(out); err == nil {
				t.Fatal("a refused build left its bundle")
			}
		})
	}
	// An unrelated base makes no useful patch: left out, with a warning.
	other := img("1.0.1", "")
	run(t, "release", "build", "--keys", keyDir, "--force", "--delta-from", other, "-o", out, v104).
		expect(t, 0, "built", "no delta from "+other)
}
