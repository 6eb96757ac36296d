package delta

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestSizeEncoding(t *testing.T) {
	for _, c := range []struct {
		v   int64
		hex string
	}{
		{0, "00"}, {1, "01"}, {63, "3f"}, {64, "8001"}, {-1, "41"}, {-63, "7f"},
		{-64, "c001"}, {8191, "bf7f"}, {8192, "808001"}, {MaxSize, "bfffff7f"}, {-MaxSize, "ffffff7f"},
	} {
		got := hex.EncodeToString(appendSize(nil, c.v))
		if got != c.hex {
			t.Errorf("appendSize(%d) = %s, want %s", c.v, got, c.hex)
		}
		b, _ := hex.DecodeString(c.hex)
		v, err := readSize(bytes.NewReader(b))
		if err != nil || v != c.v {
			t.Errorf("readSize(%s) = %d, %v, want %d", c.hex, v, err, c.v)
		}
	}
}

// handPatch builds a patch from hex pieces written from the format
// description, not by Create, so both sides are checked against the spec.
func handPatch(t *testing.T, pieces ...string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(pieces, ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestApplyHandMadePatches(t *testing.T) {
	for _, c := range []struct {
		name, from, to string
		patch          []byte
	}{
		{"diff then extra", "abcd", "abXdZZ", handPatch(t,
			"00", "06", // sequential, none; to size 6
			"00",             // no data format patch
			"04", "0000f500", // diff: 'X'-'c' = 0xf5 (mod 256)
			"02", "5a5a", // extra "ZZ"
			"00")}, // adjustment
		{"swap halves, negative adjustment", "ABCDEFGH", "EFGHABCD", handPatch(t,
			"00", "08", "00",
			"00", "00", "04", // skip ABCD in from
			"04", "00000000", "00", "48", // EFGH, then back 8
			"04", "00000000", "00", "00")}, // ABCD
		{"empty to", "abc", "", handPatch(t, "00", "00")},
		{"empty from", "", "hi", handPatch(t, "00", "02", "00", "00", "02", "6869", "00")},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			n, err := Apply(strings.NewReader(c.from), int64(len(c.from)), bytes.NewReader(c.patch), &out)
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != c.to || n != int64(len(c.to)) {
				t.Fatalf("got %q (%d), want %q", out.String(), n, c.to)
			}
		})
	}
}

// TestApplyRefuses is the table of patches Apply must refuse, each with the
// reason it must give.
func TestApplyRefuses(t *testing.T) {
	const from = "ABCDEFGH"
	for _, c := range []struct {
		name    string
		patch   []byte
		corrupt bool // wraps ErrCorrupt (otherwise: unsupported)
		want    string
	}{
		{"empty", nil, true, "no header byte"},
		{"top bit set", handPatch(t, "80", "00"), true, "reserved top bit"},
		{"in-place type", handPatch(t, "10", "00"), false, "in-place patches are not supported"},
		{"hdiffpatch type", handPatch(t, "20", "00"), false, "hdiffpatch patches are not supported"},
		{"unknown type", handPatch(t, "30", "00"), true, "unknown patch type 3"},
		{"unknown compression", handPatch(t, "0f", "00"), true, "unknown compression 15"},
		{"lzma not built", handPatch(t, "01", "01", "00"), false, "compression lzma is not available in this build"},
		{"to size truncated", handPatch(t, "00", "80"), true, "truncated inside a size field"},
		{"to size negative", handPatch(t, "00", "41"), true, "negative to size"},
		{"to size too long", handPatch(t, "00", "8080808001"), true, "longer than 4 bytes"},
		{"empty to with trailing data", handPatch(t, "00", "00", "00"), true, "data follows the header"},
		{"no stream", handPatch(t, "00", "02"), true, "truncated"},
		{"data format patch", handPatch(t, "00", "02", "01", "00"), true, "data format patch of 1 bytes"},
		{"diff past to size", handPatch(t, "00", "02", "00", "03", "000000", "00", "00"), true, "diff of 3 bytes would write past the to size"},
		{"extra past to size", handPatch(t, "00", "02", "00", "00", "03", "616263", "00"), true, "extra of 3 bytes would write past"},
		{"negative diff size", handPatch(t, "00", "02", "00", "41"), true, "negative diff size"},
		{"diff past end of from", handPatch(t, "00", "0a", "00", "0a", "00000000000000000000", "00", "00"), true, "reads past the end of from"},
		{"diff after seek past from", handPatch(t, "00", "02", "00", "00", "00", "08", "02", "0000", "00", "00"), true, "reads past the end of from"},
		{"adjustment before from", handPatch(t, "00", "01", "00", "00", "01", "61", "41"), true, "outside from"},
		{"adjustment after from", handPatch(t, "00", "01", "00", "00", "01", "61", "09"), true, "outside from"},
		{"diff data truncated", handPatch(t, "00", "04", "00", "04", "0000"), true, "truncated inside diff data"},
		{"extra data truncated", handPatch(t, "00", "04", "00", "00", "04", "6161"), true, "truncated inside extra data"},
		{"adjustment missing", handPatch(t, "00", "01", "00", "00", "01", "61"), true, "truncated"},
		{"trailing data", handPatch(t, "00", "01", "00", "00", "01", "61", "00", "00"), true, "data after the last chunk"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			n, err := Apply(strings.NewReader(from), int64(len(from)), bytes.NewReader(c.patch), &out)
			if err == nil {
				t.Fatalf("applied (%d bytes): want an error containing %q", n, c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to contain %q", err, c.want)
			}
			if errors.Is(err, ErrCorrupt) != c.corrupt {
				t.Errorf("errors.Is(err, ErrCorrupt) = %v, want %v", !c.corrupt, c.corrupt)
			}
			if int64(out.Len()) != n {
				t.Errorf("reported %d bytes written, wrote %d", n, out.Len())
			}
		})
	}
}

func TestPatchInfo(t *testing.T) {
	info, err := PatchInfo(handPatch(t, "04", "808001"))
	if err != nil || info != (Info{"sequential", "heatshrink", 8192}) {
		t.Errorf("PatchInfo = %+v, %v", info, err)
	}
	info, err = PatchInfo(handPatch(t, "12", "00"))
	if err == nil || info.Type != "in-place" || info.Compression != "crle" {
		t.Errorf("PatchInfo(in-place) = %+v, %v; want the type named and an error", info, err)
	}
	if _, err := PatchInfo(handPatch(t, "00", "00", "00")); !errors.Is(err, ErrCorrupt) {
		t.Errorf("PatchInfo(empty to, trailing byte) = %v, want ErrCorrupt", err)
	}
}

func TestCreateRefuses(t *testing.T) {
	if _, err := Create(nil, []byte("x"), CreateOptions{Compression: "lzma"}); err == nil ||
		!strings.Contains(err.Error(), "compression lzma is not available in this build") {
		t.Errorf("Create(lzma) = %v", err)
	}
	if _, err := Create(nil, []byte("x"), CreateOptions{Compression: "gzip"}); err == nil ||
		!strings.Contains(err.Error(), `unknown compression "gzip"`) {
		t.Errorf("Create(gzip) = %v", err)
	}
}
