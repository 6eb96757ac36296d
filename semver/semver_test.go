package semver

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestParseRejects(t *testing.T) {
	for _, s := range []string{
		"", "1", "1.0", "v1.0.0", "1.0.0.0", "01.0.0", "1.00.0", "1.0.0-", "1.0.0+",
		"1.0.0-01", "1.0.0-a..b", "1.0.0-a_b", "1.0.x", "-1.0.0", "1.0.0 ", "1.0.99999999999999999999",
	} {
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

// The precedence chain from the Semantic Versioning 2.0.0 specification,
// plus the case that string order gets wrong.
func TestCompareOrder(t *testing.T) {
	chain := []string{
		"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
		"1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.9", "1.0.10", "1.1.0", "2.0.0",
	}
	for i := range chain {
		for j := range chain {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := Compare(MustParse(chain[i]), MustParse(chain[j])); got != want {
				t.Errorf("Compare(%s, %s) = %d, want %d", chain[i], chain[j], got, want)
			}
		}
	}
	if Compare(MustParse("1.0.0+a"), MustParse("1.0.0+b")) != 0 {
		t.Error("build metadata must not affect precedence")
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
