package vectors

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	cs, err := Parse([]byte("# a file\n# of two cases\n\nname: one\n# a comment inside\nbody:\nx_1: a b\n\n\nname: two\nk: v\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Name() != "one" || cs[1].Name() != "two" || cs[0].Line != 4 || cs[1].Line != 10 {
		t.Fatalf("cases %+v", cs)
	}
	if v, ok := cs[0].Get("body"); !ok || v != "" {
		t.Fatalf("empty value: %q %v", v, ok)
	}
	if v, _ := cs[0].Get("x_1"); v != "a b" {
		t.Fatalf("inner space: %q", v)
	}
	if cs, err := Parse(nil); err != nil || len(cs) != 0 {
		t.Fatalf("empty file: %v %v", cs, err)
	}
}

func TestParseRefuses(t *testing.T) {
	for name, in := range map[string]string{
		"no final newline":  "name: a",
		"carriage return":   "name: a\r\n",
		"tab":               "name:\ta\n",
		"line of spaces":    "name: a\n \nname: b\n",
		"no colon":          "name: a\nkey\n",
		"no space":          "name:a\n",
		"two spaces":        "name:  a\n",
		"trailing space":    "name: a \n",
		"space only":        "name: \n",
		"upper-case key":    "name: a\nKey: v\n",
		"key with a dash":   "name: a\nmax-data: 1\n",
		"not name first":    "key: v\nname: a\n",
		"empty name":        "name:\n",
		"key twice":         "name: a\nk: 1\nk: 2\n",
		"name twice":        "name: a\n\nname: a\n",
		"non-ASCII":         "name: caf\xc3\xa9\n",
		"line over MaxLine": "name: a\nk: " + strings.Repeat("0", MaxLine) + "\n",
	} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFormatRoundTrip(t *testing.T) {
	cases := []*Case{New("one").AddHex("data", []byte{0, 0xff}).Add("empty", "").AddInt("n", -3), New("two").Add("s", "x y")}
	out, err := Format([]string{"header", ""}, cases, map[string][]string{"two": {"about two"}})
	if err != nil {
		t.Fatal(err)
	}
	want := "# header\n#\n\nname: one\ndata: 00ff\nempty:\nn: -3\n\n# about two\nname: two\ns: x y\n"
	if string(out) != want {
		t.Fatalf("wrote\n%s\nwant\n%s", out, want)
	}
	back, _ := Parse(out)
	if b, _ := back[0].Hex("data"); len(b) != 2 || b[1] != 0xff {
		t.Fatalf("hex %x", b)
	}
	if n, _ := back[0].Int("n"); n != -3 {
		t.Fatalf("int %d", n)
	}
	if _, err := Format(nil, []*Case{New("bad").Add("v", " x")}, nil); err == nil {
		t.Fatal("Format wrote a value with a leading space")
	}
}
