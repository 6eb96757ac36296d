// Package semver parses and orders versions as Semantic Versioning 2.0.0
// defines them. Firmware versions are compared in this order everywhere
// (1.0.10 is newer than 1.0.9), never as strings.
package semver

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxLength bounds a version string; ESP-IDF's app descriptor holds 32 bytes.
const MaxLength = 128

// Version is a parsed semantic version. Build metadata is kept for display
// but, as the specification requires, ignored by Compare.
type Version struct {
	Major, Minor, Patch uint64
	Pre                 []string
	Build               string
	original            string
}

// ErrInvalid is returned (wrapped) for any string that is not a semantic version.
var ErrInvalid = errors.New("not a semantic version")

// Parse parses s strictly: MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], no leading
// "v", no leading zeros in numeric parts.
func Parse(s string) (Version, error) {
	if s == "" {
		return Version{}, fmt.Errorf("%w: empty", ErrInvalid)
	}
	if len(s) > MaxLength {
		return Version{}, fmt.Errorf("%w: longer than %d characters", ErrInvalid, MaxLength)
	}
	v := Version{original: s}
	rest := s
	if i := strings.IndexByte(rest, '+'); i >= 0 {
		v.Build = rest[i+1:]
		rest = rest[:i]
		if err := checkIdentifiers(v.Build, false); err != nil {
			return Version{}, fmt.Errorf("%w: %q: build metadata: %v", ErrInvalid, s, err)
		}
	}
	if i := strings.IndexByte(rest, '-'); i >= 0 {
		pre := rest[i+1:]
		rest = rest[:i]
		if err := checkIdentifiers(pre, true); err != nil {
			return Version{}, fmt.Errorf("%w: %q: pre-release: %v", ErrInvalid, s, err)
		}
		v.Pre = strings.Split(pre, ".")
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return Version{}, fmt.Errorf("%w: %q: want MAJOR.MINOR.PATCH", ErrInvalid, s)
	}
	nums := [3]*uint64{&v.Major, &v.Minor, &v.Patch}
	for i, p := range parts {
		if !isNumeric(p) {
			return Version{}, fmt.Errorf("%w: %q: %q is not a number", ErrInvalid, s, p)
		}
		if len(p) > 1 && p[0] == '0' {
			return Version{}, fmt.Errorf("%w: %q: %q has a leading zero", ErrInvalid, s, p)
		}
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return Version{}, fmt.Errorf("%w: %q: %q is out of range", ErrInvalid, s, p)
		}
		*nums[i] = n
	}
	return v, nil
}

// MustParse is Parse for constants in tests and tables; it panics on error.
func MustParse(s string) Version {
	v, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return v
}

// String returns the version as it was parsed.
func (v Version) String() string { return v.original }

// Compare returns -1, 0 or +1 as a is older than, the same as, or newer than b.
func Compare(a, b Version) int {
	for _, d := range [3][2]uint64{{a.Major, b.Major}, {a.Minor, b.Minor}, {a.Patch, b.Patch}} {
		if d[0] != d[1] {
			if d[0] < d[1] {
				return -1
			}
			return 1
		}
	}
	// A pre-release is older than the release it precedes.
	switch {
	case len(a.Pre) == 0 && len(b.Pre) == 0:
		return 0
	case len(a.Pre) == 0:
		return 1
	case len(b.Pre) == 0:
		return -1
	}
	for i := 0; i < len(a.Pre) && i < len(b.Pre); i++ {
		if c := compareIdentifier(a.Pre[i], b.Pre[i]); c != 0 {
			return c
		}
	}
	switch {
	case len(a.Pre) < len(b.Pre):
		return -1
	case len(a.Pre) > len(b.Pre):
		return 1
	}
	return 0
}

// Newer reports whether candidate is strictly newer than current. Both must
// be valid versions; an unparsable one is never newer.
func Newer(candidate, current string) bool {
	c, err := Parse(candidate)
	if err != nil {
		return false
	}
	r, err := Parse(current)
	if err != nil {
		return false
	}
	return Compare(c, r) > 0
}

func compareIdentifier(a, b string) int {
	an, bn := isNumeric(a), isNumeric(b)
	switch {
	case an && bn:
		// Numeric identifiers have no leading zeros, so length orders them first.
		if len(a) != len(b) {
			if len(a) < len(b) {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	case an:
		return -1
	case bn:
		return 1
	}
	return strings.Compare(a, b)
}

func checkIdentifiers(s string, forbidLeadingZero bool) error {
	if s == "" {
		return errors.New("empty")
	}
	for _, id := range strings.Split(s, ".") {
		if id == "" {
			return errors.New("empty identifier")
		}
		for _, c := range id {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
				return fmt.Errorf("identifier %q has character %q", id, c)
			}
		}
		if forbidLeadingZero && len(id) > 1 && id[0] == '0' && isNumeric(id) {
			return fmt.Errorf("identifier %q has a leading zero", id)
		}
	}
	return nil
}

func isNumeric(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
