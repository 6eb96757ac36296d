package update_test

import (
	"strings"
	"testing"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/update"
)

func TestParseSelector(t *testing.T) {
	for _, tt := range []struct {
		in        string
		canonical string // for a valid selector
		err       string // part of the message, for an invalid one
	}{
		{in: "", canonical: ""},
		{in: "   ", canonical: ""},
		{in: "ring=canary", canonical: "ring=canary"},
		{in: " ring = canary , site != lab ", canonical: "ring=canary,site!=lab"},
		{in: "gpu,!lab", canonical: "gpu,!lab"},
		{in: "! lab", canonical: "!lab"},
		{in: "ring=", canonical: "ring="}, // an empty value is a value
		{in: "site!=lab,ring=canary", canonical: "site!=lab,ring=canary"},
		{in: "ring=a,ring=b", canonical: "ring=a,ring=b"}, // never matches, but allowed
		{in: "k8s.io/zone=eu-west:1", canonical: "k8s.io/zone=eu-west:1"},

		{in: "ring==x", err: `selector term "ring==x": write key=value, key!=value, key or !key (e.g. ring=canary,site!=lab)`},
		{in: "!ring=x", err: `selector term "!ring=x": write key=value`},
		{in: "ring!", err: `selector term "ring!": write key=value`},
		{in: "ring=canary,,site=lab", err: `selector "ring=canary,,site=lab" has an empty term: write key=value`},
		{in: "ring=canary,", err: `has an empty term`},
		{in: "=canary", err: `selector term "=canary": a label needs a key`},
		{in: "!", err: `selector term "!": a label needs a key`},
		{in: "Ring=canary", err: `selector term "Ring=canary": label key "Ring": use lower-case letters`},
		{in: "ring=can ary", err: `selector term "ring=can ary": label ring: value "can ary" may hold only`},
		{in: "ring=" + strings.Repeat("x", 64), err: "value is longer than 63 characters"},
	} {
		sel, err := update.ParseSelector(tt.in)
		if tt.err != "" {
			if fota.ErrorCode(err) != fota.EINVALID || !strings.Contains(fota.ErrorMessage(err), tt.err) {
				t.Errorf("ParseSelector(%q) = %v, want EINVALID containing %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseSelector(%q): %v", tt.in, err)
			continue
		}
		if got := sel.String(); got != tt.canonical {
			t.Errorf("ParseSelector(%q).String() = %q, want %q", tt.in, got, tt.canonical)
		}
		if sel.Empty() != (tt.canonical == "") {
			t.Errorf("ParseSelector(%q).Empty() = %v", tt.in, sel.Empty())
		}
	}
}

func TestSelectorMatches(t *testing.T) {
	canary := map[string]string{"ring": "canary", "site": "berlin"}
	lab := map[string]string{"ring": "canary", "site": "lab", "gpu": ""}
	for _, tt := range []struct {
		selector string
		labels   map[string]string
		want     bool
	}{
		{"", nil, true},
		{"", canary, true},
		{"ring=canary", canary, true},
		{"ring=canary", map[string]string{"ring": "stable"}, false},
		{"ring=canary", nil, false},
		{"ring=", map[string]string{"ring": ""}, true},
		{"ring=", nil, false},
		{"site!=lab", canary, true},
		{"site!=lab", lab, false},
		{"site!=lab", nil, true}, // an absent label is not lab
		{"gpu", lab, true},       // present with an empty value
		{"gpu", canary, false},
		{"!gpu", canary, true},
		{"!gpu", lab, false},
		{"ring=canary,site!=lab", canary, true},
		{"ring=canary,site!=lab", lab, false}, // every term must hold
		{"ring=canary,ring=stable", canary, false},
	} {
		sel, err := update.ParseSelector(tt.selector)
		if err != nil {
			t.Fatalf("ParseSelector(%q): %v", tt.selector, err)
		}
		if got := sel.Matches(tt.labels); got != tt.want {
			t.Errorf("%q matches %v = %v, want %v", tt.selector, tt.labels, got, tt.want)
		}
	}
}

// FuzzParseSelector checks that every selector the parser accepts reads
// back from its canonical form unchanged, and that it refuses anything
// else with EINVALID.
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"", "ring=canary", " ring = canary , site != lab ", "gpu,!lab", "ring==x", "a,,b", "!", "k8s.io/zone=eu-west:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := update.ParseSelector(s)
		if err != nil {
			if fota.ErrorCode(err) != fota.EINVALID {
				t.Fatalf("ParseSelector(%q): %v, want EINVALID", s, err)
			}
			return
		}
		again, err := update.ParseSelector(sel.String())
		if err != nil {
			t.Fatalf("ParseSelector(%q) accepted, but not its canonical form %q: %v", s, sel.String(), err)
		}
		if again.String() != sel.String() {
			t.Fatalf("canonical form %q reads back as %q", sel.String(), again.String())
		}
	})
}
