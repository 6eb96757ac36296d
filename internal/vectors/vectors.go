// Package vectors reads and writes the test vector files of
// protocol/testdata/vectors: a format simple enough to parse in a few
// lines of C, described in that folder's README.md. Parse is strict, so
// the Go tests that read the files also check that they keep to the
// format.
package vectors

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// MaxLine is the longest line a file may hold, its newline included.
const MaxLine = 4096

// Field is one "key: value" line.
type Field struct {
	Key, Value string
}

// Case is one paragraph of a file: its fields in file order, "name" first.
type Case struct {
	Line   int // of its name line, counting from 1
	Fields []Field
}

// Name returns the case's name.
func (c *Case) Name() string { v, _ := c.Get("name"); return v }

// Get returns the value of key and whether the case has it.
func (c *Case) Get(key string) (string, bool) {
	for _, f := range c.Fields {
		if f.Key == key {
			return f.Value, true
		}
	}
	return "", false
}

// Hex returns the bytes of the hex value of key.
func (c *Case) Hex(key string) ([]byte, error) {
	v, ok := c.Get(key)
	if !ok {
		return nil, fmt.Errorf("case %q: no %s", c.Name(), key)
	}
	b, err := hex.DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("case %q: %s: %v", c.Name(), key, err)
	}
	return b, nil
}

// Int returns the decimal value of key.
func (c *Case) Int(key string) (int64, error) {
	v, ok := c.Get(key)
	if !ok {
		return 0, fmt.Errorf("case %q: no %s", c.Name(), key)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("case %q: %s: %v", c.Name(), key, err)
	}
	return n, nil
}

// Add appends a field; values must keep to the format (Write checks).
func (c *Case) Add(key, value string) *Case {
	c.Fields = append(c.Fields, Field{key, value})
	return c
}

// AddHex appends a field holding b in lowercase hex.
func (c *Case) AddHex(key string, b []byte) *Case { return c.Add(key, hex.EncodeToString(b)) }

// AddInt appends a field holding n in decimal.
func (c *Case) AddInt(key string, n int64) *Case { return c.Add(key, strconv.FormatInt(n, 10)) }

// New starts a case named name.
func New(name string) *Case { return (&Case{}).Add("name", name) }

// Parse reads a file's cases. It refuses anything outside the format:
// bytes other than printable ASCII and newlines, a line over MaxLine, a
// missing final newline, a line of spaces, a key that is not
// [a-z][a-z0-9_]*, a value with leading or trailing spaces, a case whose
// first field is not name, a key twice in a case, a name twice in a file.
func Parse(data []byte) ([]Case, error) {
	if len(data) > 0 && data[len(data)-1] != '\n' {
		return nil, fmt.Errorf("no newline at the end of the file")
	}
	var cases []Case
	var cur *Case
	names := map[string]int{}
	for i, line := range strings.SplitAfter(string(data), "\n") {
		n := i + 1
		if line == "" {
			break // after the final newline
		}
		if len(line) > MaxLine {
			return nil, fmt.Errorf("line %d: %d bytes, over %d", n, len(line), MaxLine)
		}
		line = line[:len(line)-1]
		for j := 0; j < len(line); j++ {
			if c := line[j]; c < 0x20 || c > 0x7e {
				return nil, fmt.Errorf("line %d: byte 0x%02x: only printable ASCII is allowed", n, c)
			}
		}
		switch {
		case line == "":
			cur = nil
			continue
		case line[0] == '#':
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("line %d: no colon: %q", n, line)
		}
		if !validKey(key) {
			return nil, fmt.Errorf("line %d: key %q: want [a-z][a-z0-9_]*", n, key)
		}
		if value != "" {
			if value[0] != ' ' {
				return nil, fmt.Errorf("line %d: want a space after %q", n, key+":")
			}
			value = value[1:]
			if value == "" || value[0] == ' ' || value[len(value)-1] == ' ' {
				return nil, fmt.Errorf("line %d: value of %s has leading or trailing spaces", n, key)
			}
		}
		if cur == nil {
			if key != "name" {
				return nil, fmt.Errorf("line %d: a case starts with %q, want name", n, key)
			}
			if value == "" {
				return nil, fmt.Errorf("line %d: empty name", n)
			}
			if prev, dup := names[value]; dup {
				return nil, fmt.Errorf("line %d: case %q again (first at line %d)", n, value, prev)
			}
			names[value] = n
			cases = append(cases, Case{Line: n})
			cur = &cases[len(cases)-1]
		} else if _, dup := cur.Get(key); dup {
			return nil, fmt.Errorf("line %d: case %q has %s twice", n, cur.Name(), key)
		}
		cur.Fields = append(cur.Fields, Field{key, value})
	}
	return cases, nil
}

// ReadFile parses a file.
func ReadFile(path string) ([]Case, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cs, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cs, nil
}

// Format writes a file: the header as comment lines, then the cases, each
// preceded by its comment lines (comments[name], may be absent) and
// followed by a blank line. It parses what it wrote, so it never writes a
// file its readers refuse.
func Format(header []string, cases []*Case, comments map[string][]string) ([]byte, error) {
	var b bytes.Buffer
	for _, l := range header {
		b.WriteString(strings.TrimRight("# "+l, " ") + "\n")
	}
	for _, c := range cases {
		b.WriteString("\n")
		for _, l := range comments[c.Name()] {
			b.WriteString(strings.TrimRight("# "+l, " ") + "\n")
		}
		for _, f := range c.Fields {
			if f.Value == "" {
				b.WriteString(f.Key + ":\n")
			} else {
				b.WriteString(f.Key + ": " + f.Value + "\n")
			}
		}
	}
	out := b.Bytes()
	back, err := Parse(out)
	if err != nil {
		return nil, err
	}
	if len(back) != len(cases) {
		return nil, fmt.Errorf("wrote %d cases, read back %d", len(cases), len(back))
	}
	return out, nil
}

func validKey(k string) bool {
	if k == "" || k[0] < 'a' || k[0] > 'z' {
		return false
	}
	for i := 1; i < len(k); i++ {
		if c := k[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
