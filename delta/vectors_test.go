package delta

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors from the list in vectors_test.go")

// A vector file is lines "key: value": expect (success, corrupt or
// unsupported), from, patch and, on success, to, all in hex; '#' lines are
// comments. Other appliers (the C client) read the same files.
type vector struct {
	name, comment, expect string
	from, patch, to       []byte
}

// vectorSources are the vectors: pairs patched by Create, and patches built
// by hand that an applier must refuse.
func vectorSources(t *testing.T) []vector {
	created := []struct{ name, comment, from, to string }{
		{"empty-to", "to is empty: header only", "abc", ""},
		{"empty-from", "from is empty: all extra data", "", "new image"},
		{"edit", "one byte changed: a diff chunk", "EcoWatt firmware 1.0.4 build 17", "EcoWatt firmware 1.0.5 build 17"},
		{"insert", "bytes inserted in the middle", "0123456789abcdefghijklmnopqrstuvwxyz", "0123456789abcdefgh<INSERTED>ijklmnopqrstuvwxyz"},
		{"delete", "bytes deleted in the middle", "0123456789abcdefghijklmnopqrstuvwxyz", "0123456789abcdefghqrstuvwxyz"},
		{"move", "blocks swapped: negative adjustment", "first block of bytes|second block of bytes|", "second block of bytes|first block of bytes|"},
	}
	var vs []vector
	for _, c := range created {
		patch, err := Create([]byte(c.from), []byte(c.to), CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, vector{name: c.name, comment: c.comment + "; made by delta.Create", expect: "success",
			from: []byte(c.from), patch: patch, to: []byte(c.to)})
	}
	refused := []struct{ name, expect, comment, patch string }{
		{"bad-truncated", "corrupt", "extra data cut short", "000400000461"},
		{"bad-trailing", "corrupt", "a byte after the last chunk", "00010000000161" + "00" + "00"},
		{"bad-diff-past-from", "corrupt", "diff reads past the end of from (8 bytes)", "000a000a" + strings.Repeat("00", 10) + "0000"},
		{"bad-write-past-to", "corrupt", "extra of 3 bytes with a to size of 2", "0002000003616263" + "00"},
		{"bad-adjustment", "corrupt", "adjustment moves before the start of from", "0001000001" + "61" + "41"},
		{"bad-size-overflow", "corrupt", "a 5-byte size field (more than 27 bits)", "008080808001"},
		{"unsupported-in-place", "unsupported", "in-place patch type", "1000"},
		{"bad-data-format", "corrupt", "data format patch (detools --data-format)", "0002" + "01" + "00"},
	}
	for _, c := range refused {
		p, err := hex.DecodeString(c.patch)
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, vector{name: c.name, comment: c.comment, expect: c.expect, from: []byte("ABCDEFGH"), patch: p})
	}
	return vs
}

func (v vector) encode() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\nexpect: %s\nfrom: %x\npatch: %x\n", v.comment, v.expect, v.from, v.patch)
	if v.expect == "success" {
		fmt.Fprintf(&b, "to: %x\n", v.to)
	}
	return b.Bytes()
}

func parseVector(name string, data []byte) (vector, error) {
	v := vector{name: name}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, ": ")
		if !ok {
			key, val = strings.TrimSuffix(line, ":"), ""
		}
		var err error
		switch key {
		case "expect":
			v.expect = val
		case "from":
			v.from, err = hex.DecodeString(val)
		case "patch":
			v.patch, err = hex.DecodeString(val)
		case "to":
			v.to, err = hex.DecodeString(val)
		default:
			return v, fmt.Errorf("unknown key %q", key)
		}
		if err != nil {
			return v, fmt.Errorf("%s: %w", key, err)
		}
	}
	return v, sc.Err()
}

func readVectors(t *testing.T) []vector {
	files, err := filepath.Glob("testdata/vectors/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no vectors in testdata/vectors: run go test ./delta -run TestVectors -update")
	}
	var vs []vector
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v, err := parseVector(strings.TrimSuffix(filepath.Base(f), ".txt"), data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		vs = append(vs, v)
	}
	return vs
}

func TestVectors(t *testing.T) {
	if *update {
		if err := os.MkdirAll("testdata/vectors", 0o755); err != nil {
			t.Fatal(err)
		}
		for _, v := range vectorSources(t) {
			if err := os.WriteFile(filepath.Join("testdata/vectors", v.name+".txt"), v.encode(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, v := range readVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := Apply(bytes.NewReader(v.from), int64(len(v.from)), bytes.NewReader(v.patch), &out)
			switch v.expect {
			case "success":
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out.Bytes(), v.to) {
					t.Fatalf("made %x, want %x", out.Bytes(), v.to)
				}
			case "corrupt":
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("error %v, want ErrCorrupt", err)
				}
			case "unsupported":
				if err == nil || errors.Is(err, ErrCorrupt) {
					t.Fatalf("error %v, want an unsupported-patch error", err)
				}
			default:
				t.Fatalf("unknown expect %q", v.expect)
			}
		})
	}
}
