package cli

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestDeltaCreateApply(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "app-1.0.4.bin")
	neu := filepath.Join(dir, "app-1.0.5.bin")
	run(t, "firmware", "sample", "--version", "1.0.4", "--size", "64KiB", "--lineage", "x", "-o", old).expect(t, 0, "wrote", "")
	run(t, "firmware", "sample", "--version", "1.0.5", "--size", "64KiB", "--lineage", "x", "-o", neu).expect(t, 0, "wrote", "")
	patch := filepath.Join(dir, "p.patch")
	out := filepath.Join(dir, "out.bin")

	want, _ := os.ReadFile(neu)
	sum := fmt.Sprintf("%x", sha256.Sum256(want))
	r := run(t, "delta", "create", "--from", old, "--to", neu, "-o", patch)
	r.expect(t, 0, "from 65536 bytes, to 65536 bytes (sha256 "+sum+"), patch ", "")
	if r.stderr != "" {
		t.Fatalf("a small patch warned: %s", r.stderr)
	}
	run(t, "delta", "apply", "--from", old, "--patch", patch, "--expect-sha256", sum, "-o", out).
		expect(t, 0, "wrote "+out+": 65536 bytes (matches --expect-sha256)", "")
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

	// Applied to another image of the same size, the patch makes a wrong
	// one: only --expect-sha256 catches it, and nothing is written.
	sibling := filepath.Join(dir, "app-1.0.3.bin")
	run(t, "firmware", "sample", "--version", "1.0.3", "--size", "64KiB", "-o", sibling).expect(t, 0, "wrote", "")
	wrong := filepath.Join(dir, "wrong.bin")
	run(t, "delta", "apply", "--from", sibling, "--patch", patch, "--expect-sha256", sum, "-o", wrong).
		expect(t, 1, "", "not the expected "+sum)
	if _, err := os.Stat(wrong); !os.IsNotExist(err) {
		t.Errorf("a refused apply left %s behind", wrong)
	}
	run(t, "delta", "apply", "--from", old, "--patch", patch, "--expect-sha256", "12ab", "-o", wrong).expect(t, 2, "", "64 hex digits")
	// Unrelated images make no useful patch: said so.
	run(t, "delta", "create", "--from", sibling, "--to", neu, "-o", filepath.Join(dir, "big.patch")).
		expect(t, 0, "", "no smaller than the new image")

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
	fota := filepath.Join(dir, "x.fota")
	os.WriteFile(fota, []byte("FOTA and more"), 0o644)
	run(t, "delta", "create", "--from", fota, "--to", a, "-o", filepath.Join(dir, "p")).expect(t, 1, "", "is a release bundle")
}
