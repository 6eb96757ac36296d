package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestDeltaCreateApply(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "app-1.0.4.bin")
	neu := filepath.Join(dir, "app-1.0.5.bin")
	run(t, "firmware", "sample", "--version", "1.0.4", "--size", "64KiB", "-o", old).expect(t, 0, "wrote", "")
	run(t, "firmware", "sample", "--version", "1.0.5", "--size", "64KiB", "-o", neu).expect(t, 0, "wrote", "")
	patch := filepath.Join(dir, "p.patch")
	out := filepath.Join(dir, "out.bin")

	run(t, "delta", "create", "--from", old, "--to", neu, "-o", patch).
		expect(t, 0, "from 65536 bytes, to 65536 bytes, patch ", "")
	run(t, "delta", "apply", "--from", old, "--patch", patch, "-o", out).expect(t, 0, "wrote "+out+": 65536 bytes", "")
	want, _ := os.ReadFile(neu)
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatal("apply did not rebuild the new image")
	}
	for _, p := range []string{patch, out} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v, %v; want 0644", p, st.Mode().Perm(), err)
		}
	}

	// Existing files are kept without --force.
	run(t, "delta", "create", "--from", old, "--to", neu, "-o", patch).expect(t, 1, "", "p.patch already exists")
	run(t, "delta", "apply", "--from", old, "--patch", patch, "-o", out).expect(t, 1, "", "out.bin already exists")
	run(t, "delta", "create", "--from", old, "--to", neu, "--force", "-o", patch).expect(t, 0, "% of to", "")

	// A patch applied to the wrong image is refused, and nothing is written.
	other := filepath.Join(dir, "other.bin")
	if err := os.WriteFile(other, []byte("short"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.bin")
	run(t, "delta", "apply", "--from", other, "--patch", patch, "-o", bad).
		expect(t, 1, "", "reads past the end of from")
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("a failed apply left %s behind", bad)
	}
	// A truncated patch is refused with a hint.
	data, _ := os.ReadFile(patch)
	cut := filepath.Join(dir, "cut.patch")
	os.WriteFile(cut, data[:len(data)/2], 0o644)
	run(t, "delta", "apply", "--from", old, "--patch", cut, "-o", bad).expect(t, 1, "", "fota: hint: check that --from")
}

func TestDeltaUsage(t *testing.T) {
	run(t, "delta").expect(t, 2, "", "needs a subcommand")
	run(t, "delta", "--help").expect(t, 0, "fota delta create", "")
	run(t, "delta", "create", "--from", "a").expect(t, 2, "", "--from, --to and -o are required")
	run(t, "delta", "apply", "--from", "a", "stray").expect(t, 2, "", "takes no arguments")
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	os.WriteFile(a, []byte("abc"), 0o644)
	run(t, "delta", "create", "--from", a, "--to", a, "--compression", "lzma", "-o", filepath.Join(dir, "p")).
		expect(t, 1, "", "compression lzma is not available in this build")
	run(t, "delta", "create", "--from", a, "--to", a, "--compression", "gzip", "-o", filepath.Join(dir, "p")).
		expect(t, 1, "", `unknown compression "gzip"`)
	run(t, "delta", "create", "--from", filepath.Join(dir, "missing"), "--to", a, "-o", filepath.Join(dir, "p")).
		expect(t, 1, "", "missing")
}
