package update

import (
	"strings"

	"github.com/ecowatt/fota"
)

// selectorHelp ends every selector syntax error: operators read it.
const selectorHelp = "write key=value, key!=value, key or !key (e.g. ring=canary,site!=lab)"

// Selector picks devices by their labels: a list of terms that must all
// hold. The zero Selector matches every device.
type Selector struct {
	terms []selectorTerm
}

type selectorOp int

const (
	opEqual    selectorOp = iota // key=value
	opNotEqual                   // key!=value, also true when the label is absent
	opPresent                    // key
	opAbsent                     // !key
)

type selectorTerm struct {
	op         selectorOp
	key, value string
}

// ParseSelector parses comma-separated terms, each key=value, key!=value,
// key (the label is present) or !key (it is absent); spaces around terms
// and operators do not matter. "" selects every device. Errors are
// EINVALID and say which term is wrong.
func ParseSelector(s string) (Selector, error) {
	if strings.TrimSpace(s) == "" {
		return Selector{}, nil
	}
	var sel Selector
	for raw := range strings.SplitSeq(s, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			return Selector{}, fota.Errorf(fota.EINVALID, "selector %q has an empty term: %s", s, selectorHelp)
		}
		term, err := parseSelectorTerm(raw)
		if err != nil {
			return Selector{}, err
		}
		sel.terms = append(sel.terms, term)
	}
	return sel, nil
}

func parseSelectorTerm(raw string) (selectorTerm, error) {
	var t selectorTerm
	if k, v, ok := strings.Cut(raw, "!="); ok {
		t = selectorTerm{op: opNotEqual, key: strings.TrimSpace(k), value: strings.TrimSpace(v)}
	} else if k, v, ok := strings.Cut(raw, "="); ok {
		t = selectorTerm{op: opEqual, key: strings.TrimSpace(k), value: strings.TrimSpace(v)}
	} else if k, ok := strings.CutPrefix(raw, "!"); ok {
		t = selectorTerm{op: opAbsent, key: strings.TrimSpace(k)}
	} else {
		t = selectorTerm{op: opPresent, key: raw}
	}
	// A stray operator character left in a key or value ("ring==x",
	// "!ring=x") is a misspelt term, not a bad label: say how to write one.
	if strings.ContainsAny(t.key, "=!") || strings.ContainsAny(t.value, "=!") {
		return selectorTerm{}, fota.Errorf(fota.EINVALID, "selector term %q: %s", raw, selectorHelp)
	}
	if err := fota.ValidLabel(t.key, t.value); err != nil {
		return selectorTerm{}, fota.Errorf(fota.EINVALID, "selector term %q: %s", raw, fota.ErrorMessage(err))
	}
	return t, nil
}

// Matches reports whether labels satisfy every term. A key!=value term
// holds when the label is absent too.
func (s Selector) Matches(labels map[string]string) bool {
	for _, t := range s.terms {
		v, present := labels[t.key]
		var holds bool
		switch t.op {
		case opEqual:
			holds = present && v == t.value
		case opNotEqual:
			holds = !present || v != t.value
		case opPresent:
			holds = present
		case opAbsent:
			holds = !present
		}
		if !holds {
			return false
		}
	}
	return true
}

// String is the canonical form: the terms in the order given, without
// spaces, joined by commas. ParseSelector reads it back unchanged.
func (s Selector) String() string {
	var b strings.Builder
	for i, t := range s.terms {
		if i > 0 {
			b.WriteByte(',')
		}
		switch t.op {
		case opEqual:
			b.WriteString(t.key + "=" + t.value)
		case opNotEqual:
			b.WriteString(t.key + "!=" + t.value)
		case opPresent:
			b.WriteString(t.key)
		case opAbsent:
			b.WriteString("!" + t.key)
		}
	}
	return b.String()
}

// Empty reports whether the selector has no terms and so matches every
// device.
func (s Selector) Empty() bool { return len(s.terms) == 0 }
