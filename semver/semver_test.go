package semver

import (
	"errors"
	"path/filepath"
	"testing"
)

// Strings with spaces at either end, which semver.vectors cannot hold (its
// values never start or end with a space).
func TestParseRejectsSpaces(t *testing.T) {
	for _, s := range []string{"1.0.0 ", " 1.0.0", "1.0.0-rc.1 ", "1.0.0+b\n"} {
		if _, err := Parse(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

func TestParseAccepts(t *testing.T) {
	v, err := Parse("1.2.3-rc.1+build.5")
	if err != nil {
		t.Fatal(err)
	}
	if v.Major != 1 || v.Minor != 2 || v.Patch != 3 || len(v.Pre) != 2 || v.Build != "build.5" {
		t.Fatalf("parsed %+v", v)
	}
	if v.String() != "1.2.3-rc.1+build.5" {
		t.Fatalf("String() = %q", v.String())
	}
}

func TestNewer(t *testing.T) {
	cases := []struct {
		candidate, current string
		want               bool
	}{
		{"1.0.10", "1.0.9", true},
		{"1.0.9", "1.0.10", false},
		{"1.0.4", "1.0.4", false},
		{"1.0.4", "not-a-version", false},
		{"garbage", "1.0.0", false},
	}
	for _, c := range cases {
		if got := Newer(c.candidate, c.current); got != c.want {
			t.Errorf("Newer(%q, %q) = %v, want %v", c.candidate, c.current, got, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	if seeds, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzParse", "*")); len(seeds) == 0 {
		f.Fatal("seed corpus testdata/fuzz/FuzzParse is empty")
	}
	for _, s := range []string{"1.0.0", "1.0.0-rc.1+b", "0.0.0-0", "1.2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(v.String())
		if err != nil || Compare(v, again) != 0 {
			t.Fatalf("round trip of %q failed: %v", s, err)
		}
	})
}
