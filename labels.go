package fota

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Label limits: labels select devices for rollouts and are shown
// everywhere, so they stay short and plain.
const (
	MaxLabels         = 32
	MaxLabelKeyLen    = 63
	MaxLabelValueLen  = 63
	labelKeyChars     = "abcdefghijklmnopqrstuvwxyz0123456789._-/"
	labelValueChars   = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-:/"
	labelKeyFirstChar = "abcdefghijklmnopqrstuvwxyz0123456789"
)

// ValidLabel says what is wrong with a label, or returns nil: keys are
// 1-63 characters of a-z 0-9 . _ - / starting with a letter or digit;
// values are 0-63 characters of letters, digits and . _ - : /.
func ValidLabel(key, value string) error {
	switch {
	case key == "":
		return Errorf(EINVALID, "a label needs a key, as in ring=canary")
	case len(key) > MaxLabelKeyLen:
		return Errorf(EINVALID, "label key %.20q... is longer than %d characters", key, MaxLabelKeyLen)
	case !strings.ContainsRune(labelKeyFirstChar, rune(key[0])) || strings.Trim(key, labelKeyChars) != "":
		return Errorf(EINVALID, "label key %q: use lower-case letters, digits and . _ - /, starting with a letter or digit", key)
	case len(value) > MaxLabelValueLen:
		return Errorf(EINVALID, "label %s: value is longer than %d characters", key, MaxLabelValueLen)
	case strings.Trim(value, labelValueChars) != "":
		return Errorf(EINVALID, "label %s: value %q may hold only letters, digits and . _ - : /", key, value)
	}
	return nil
}

// ParseLabels parses "k=v" arguments into a map, refusing invalid and
// repeated keys.
func ParseLabels(args []string) (map[string]string, error) {
	labels := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, Errorf(EINVALID, "label %q: write it as key=value", a)
		}
		if err := ValidLabel(k, v); err != nil {
			return nil, err
		}
		if _, dup := labels[k]; dup {
			return nil, Errorf(EINVALID, "label %s given twice", k)
		}
		labels[k] = v
	}
	if len(labels) > MaxLabels {
		return nil, Errorf(EINVALID, "%d labels; a device has at most %d", len(labels), MaxLabels)
	}
	return labels, nil
}

// FormatLabels writes labels as "k=v,k2=v2", keys sorted.
func FormatLabels(labels map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(labels)) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%s", k, labels[k])
	}
	return b.String()
}

// ValidLabels checks a device's labels: each ValidLabel, at most MaxLabels.
func ValidLabels(labels map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if err := ValidLabel(k, labels[k]); err != nil {
			return err
		}
	}
	if len(labels) > MaxLabels {
		return Errorf(EINVALID, "%d labels; a device has at most %d", len(labels), MaxLabels)
	}
	return nil
}

// EditLabels applies set and remove to labels (which it leaves as they
// are) and returns the result with a description of the change for the
// labels event, such as "set ring=canary; removed site". Keys removed that
// were not there, and labels set to the value they had, are no change. A
// key both set and removed is EINVALID, as is a result ValidLabels refuses.
func EditLabels(labels, set map[string]string, remove []string) (map[string]string, string, error) {
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	changed := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		if err := ValidLabel(k, set[k]); err != nil {
			return nil, "", err
		}
		if old, ok := out[k]; !ok || old != set[k] {
			changed[k] = set[k]
		}
		out[k] = set[k]
	}
	var removed []string
	for _, k := range remove {
		if _, ok := set[k]; ok {
			return nil, "", Errorf(EINVALID, "label %s is both set and removed", k)
		}
		if _, ok := out[k]; ok {
			delete(out, k)
			removed = append(removed, k)
		}
	}
	if len(out) > MaxLabels {
		return nil, "", Errorf(EINVALID, "%d labels; a device has at most %d", len(out), MaxLabels)
	}
	var parts []string
	if len(changed) > 0 {
		parts = append(parts, "set "+FormatLabels(changed))
	}
	if len(removed) > 0 {
		slices.Sort(removed)
		parts = append(parts, "removed "+strings.Join(removed, ","))
	}
	if len(parts) == 0 {
		return out, "labels unchanged", nil
	}
	return out, strings.Join(parts, "; "), nil
}
