package semver

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/ecowatt/fota/internal/vectors"
)

// semver.vectors lives with the protocol's vectors, which the C client
// reads too; go test ./protocol -run TestVectors -update writes it from
// this package and checks its format.
const vectorFile = "../protocol/testdata/vectors/semver.vectors"

// TestVectors checks every parse and precedence case of the shared file:
// the specification's precedence chain, numeric against alphanumeric
// identifiers, build metadata, and the strings Parse must refuse.
func TestVectors(t *testing.T) {
	cases, err := vectors.ReadFile(vectorFile)
	if err != nil {
		t.Fatal(err)
	}
	var compared, parsed int
	for _, c := range cases {
		get := func(k string) string {
			v, ok := c.Get(k)
			if !ok {
				t.Fatalf("case %q: no %s", c.Name(), k)
			}
			return v
		}
		if a, ok := c.Get("a"); ok {
			compared++
			b := get("b")
			want, err := strconv.Atoi(get("cmp"))
			if err != nil {
				t.Fatalf("case %q: cmp: %v", c.Name(), err)
			}
			va, errA := Parse(a)
			vb, errB := Parse(b)
			if errA != nil || errB != nil {
				t.Errorf("%s: %v, %v", c.Name(), errA, errB)
				continue
			}
			if got := Compare(va, vb); got != want {
				t.Errorf("%s: Compare(%s, %s) = %d, want %d", c.Name(), a, b, got, want)
			}
			if got := Compare(vb, va); got != -want {
				t.Errorf("%s: Compare(%s, %s) = %d, want %d", c.Name(), b, a, got, -want)
			}
			continue
		}
		parsed++
		s := get("version")
		v, err := Parse(s)
		if get("valid") == "false" {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: Parse(%q) = %+v, %v; want ErrInvalid", c.Name(), s, v, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: Parse(%q): %v", c.Name(), s, err)
			continue
		}
		got := []string{strconv.FormatUint(v.Major, 10), strconv.FormatUint(v.Minor, 10), strconv.FormatUint(v.Patch, 10), strings.Join(v.Pre, "."), v.Build}
		want := []string{get("major"), get("minor"), get("patch"), get("prerelease"), get("build")}
		if strings.Join(got, "|") != strings.Join(want, "|") || v.String() != s {
			t.Errorf("%s: Parse(%q) = %q, want %q", c.Name(), s, got, want)
		}
	}
	if compared < 20 || parsed < 20 {
		t.Fatalf("%d comparisons and %d parses in %s: the file lost its cases", compared, parsed, vectorFile)
	}
}
