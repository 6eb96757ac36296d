package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	write := func(s string) func(*os.File) error {
		return func(f *os.File) error { _, err := f.WriteString(s); return err }
	}
	if err := Write(p, 0o640, false, write("one")); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %04o", st.Mode().Perm())
	}
	if err := Write(p, 0o600, false, write("two")); !errors.Is(err, ErrExists) {
		t.Fatalf("second write without replace: %v", err)
	}
	if err := Write(p, 0o600, true, write("three")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "three" {
		t.Fatalf("content %q", b)
	}
	failing := errors.New("disk full")
	if err := Write(filepath.Join(dir, "g"), 0o600, false, func(f *os.File) error { f.WriteString("half"); return failing }); !errors.Is(err, failing) {
		t.Fatalf("failing fill: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("%d entries left, want only f", len(entries))
	}
}
