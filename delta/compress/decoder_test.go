package compress

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// saveRestore moves d's state into a fresh decoder of the same kind and
// checks that the state survives unchanged.
func saveRestore(t testing.TB, kind string, d Decoder) Decoder {
	state, err := d.AppendBinary(nil)
	if err != nil {
		t.Fatalf("%s: save: %v", kind, err)
	}
	n, err := NewDecoder(kind)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.UnmarshalBinary(state); err != nil {
		t.Fatalf("%s: restore %x: %v", kind, state, err)
	}
	again, err := n.AppendBinary(nil)
	if err != nil || !bytes.Equal(again, state) {
		t.Fatalf("%s: restored state %x, saved %x (%v)", kind, again, state, err)
	}
	return n
}

// pushAll decodes comp pushed in random pieces into random-sized output
// buffers, moving the state to a fresh decoder after every call if asked.
func pushAll(t testing.TB, r *rand.Rand, kind string, comp []byte, restore bool) ([]byte, error) {
	d, err := NewDecoder(kind)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	dst := make([]byte, 300)
	for len(comp) > 0 {
		src := comp[:min(1+r.IntN(300), len(comp))]
		for {
			nd, ns, err := d.Decode(dst[:1+r.IntN(len(dst))], src)
			out = append(out, dst[:nd]...)
			src, comp = src[ns:], comp[ns:]
			if err != nil {
				return out, err
			}
			if restore {
				d = saveRestore(t, kind, d)
			}
			if nd == 0 && len(src) == 0 {
				break
			}
		}
	}
	for { // what the last input still makes
		nd, _, err := d.Decode(dst, nil)
		out = append(out, dst[:nd]...)
		if err != nil {
			return out, err
		}
		if nd == 0 {
			break
		}
	}
	return out, d.End()
}

// TestDecoderPieces: every sample and reference stream decodes to its input
// whatever the piece and buffer sizes, with the state saved and restored
// after every call.
func TestDecoderPieces(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	type stream struct {
		name, kind string
		comp, want []byte
	}
	var streams []stream
	for name, data := range sampleInputs() {
		if len(data) > 30000 {
			data = data[:30000]
		}
		for _, kind := range Kinds {
			streams = append(streams, stream{name, kind, compressAll(t, kind, data, len(data)+1), data})
		}
	}
	refs, _ := filepath.Glob("testdata/*.bin")
	for _, in := range refs {
		data, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, kind := range []string{"crle", "heatshrink"} {
			comp, err := os.ReadFile(strings.TrimSuffix(in, ".bin") + "." + kind)
			if err != nil {
				t.Fatal(err)
			}
			streams = append(streams, stream{filepath.Base(in), kind, comp, data})
		}
	}
	if len(refs) < 5 {
		t.Fatalf("only %d reference inputs", len(refs))
	}
	for _, s := range streams {
		for _, restore := range []bool{false, true} {
			got, err := pushAll(t, r, s.kind, s.comp, restore)
			if err != nil || !bytes.Equal(got, s.want) {
				t.Fatalf("%s/%s (restore %v): %d bytes, want %d; %v", s.name, s.kind, restore, len(got), len(s.want), err)
			}
		}
	}
}

// TestDecoderMatchesReader: on malformed and cut streams too, pushing gives
// the output and the verdict that pulling through NewReader gives.
func TestDecoderMatchesReader(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	data := sampleInputs()["firmware-like"][:3000]
	for _, kind := range []string{"crle", "heatshrink"} {
		comp := compressAll(t, kind, data, len(data))
		for range 300 {
			bad := append([]byte(nil), comp[:r.IntN(len(comp)+1)]...)
			if len(bad) > 0 && r.IntN(2) == 0 {
				bad[r.IntN(len(bad))] ^= byte(1 + r.IntN(255))
			}
			pulled, perr := decompressAll(kind, bad)
			pushed, err := pushAll(t, r, kind, bad, r.IntN(2) == 0)
			if (err == nil) != (perr == nil) || !bytes.Equal(pushed, pulled) && len(pulled) < 1<<20 {
				t.Fatalf("%s: pushed %d bytes, %v; pulled %d bytes, %v", kind, len(pushed), err, len(pulled), perr)
			}
		}
	}
}

// TestDecoderEnd: End tells a complete stream from a cut one.
func TestDecoderEnd(t *testing.T) {
	for _, tt := range []struct {
		kind string
		in   []byte
		ok   bool
	}{
		{"heatshrink", nil, false},
		{"heatshrink", []byte{0x44}, true},
		{"heatshrink", []byte{0x44, 0xa0, 0x80}, true},  // 'A', zero padding
		{"heatshrink", []byte{0x44, 0xa0, 0xc0}, false}, // 'A', a one bit
		{"heatshrink", []byte{0x44, 0xa0, 0x80, 0x00}, false},
		{"crle", nil, true},
		{"crle", []byte{0x00, 0x00}, true},
		{"crle", []byte{0x00}, false},
		{"crle", []byte{0x01, 0x03}, false},
		{"crle", []byte{0x00, 0x02, 'a'}, false},
	} {
		_, err := pushAll(t, rand.New(rand.NewPCG(1, 1)), tt.kind, tt.in, true)
		if (err == nil) != tt.ok {
			t.Errorf("%s % x: End = %v", tt.kind, tt.in, err)
		}
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s % x: %v does not wrap io.ErrUnexpectedEOF", tt.kind, tt.in, err)
		}
	}
}

// TestHeatshrinkWindowLimit: a decoder limited to detools' window refuses a
// larger one, in a stream and in a saved state.
func TestHeatshrinkWindowLimit(t *testing.T) {
	d, err := NewHeatshrinkDecoder(8)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Decode(make([]byte, 10), []byte{0x54, 0x00}); !errors.Is(err, ErrWindowTooLarge) {
		t.Fatalf("window 9: %v", err)
	}
	big, _ := NewDecoder("heatshrink")
	if _, _, err := big.Decode(make([]byte, 10), []byte{0x54}); err != nil {
		t.Fatal(err)
	}
	state, err := big.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	d, _ = NewHeatshrinkDecoder(8)
	if err := d.UnmarshalBinary(state); !errors.Is(err, ErrState) {
		t.Fatalf("state with window 9: %v", err)
	}
	if _, err := NewHeatshrinkDecoder(16); err == nil {
		t.Fatal("window limit 16 accepted")
	}
}

// TestDecoderDamagedState: a state with any byte changed, or cut short, or
// of another kind, is refused with ErrState or, if accepted, decodes without
// panicking and saves again to itself.
func TestDecoderDamagedState(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	data := sampleInputs()["text"][:2000]
	for _, kind := range Kinds {
		comp := compressAll(t, kind, data, len(data))
		d, _ := NewDecoder(kind)
		var states [][]byte
		dst := make([]byte, 100)
		for i := 0; i < len(comp); i += 97 {
			src := comp[i:min(i+97, len(comp))]
			for {
				nd, ns, err := d.Decode(dst, src)
				if err != nil {
					t.Fatal(err)
				}
				src = src[ns:]
				if nd == 0 && ns == 0 {
					break
				}
			}
			s, err := d.AppendBinary(nil)
			if err != nil {
				t.Fatal(err)
			}
			states = append(states, s)
		}
		for _, s := range states {
			for other := range Kinds {
				if o, _ := NewDecoder(Kinds[other]); Kinds[other] != kind && o.UnmarshalBinary(s) == nil {
					t.Fatalf("%s state accepted by a %s decoder", kind, Kinds[other])
				}
			}
			for n := range len(s) {
				if o, _ := NewDecoder(kind); !errors.Is(o.UnmarshalBinary(s[:n]), ErrState) {
					t.Fatalf("%s state cut to %d of %d bytes accepted", kind, n, len(s))
				}
			}
			for i := range s {
				bad := append([]byte(nil), s...)
				bad[i] ^= byte(1 + r.IntN(255))
				checkState(t, kind, bad, comp[r.IntN(len(comp)):])
			}
		}
	}
}

// checkState loads state; if it is accepted, decoding more input must not
// panic and the state must save to what was loaded.
func checkState(t *testing.T, kind string, state, more []byte) {
	d, err := NewDecoder(kind)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.UnmarshalBinary(state); err != nil {
		if !errors.Is(err, ErrState) {
			t.Fatalf("refused without ErrState: %v", err)
		}
		return
	}
	if again, err := d.AppendBinary(nil); err != nil || !bytes.Equal(again, state) {
		t.Fatalf("%s: accepted state %x saves as %x (%v)", kind, state, again, err)
	}
	dst := make([]byte, 4096)
	for range 100 {
		nd, ns, err := d.Decode(dst, more)
		more = more[ns:]
		if err != nil || nd == 0 && ns == 0 {
			break
		}
	}
	d.End()
}

// FuzzDecoderState: arbitrary saved states never make a decoder panic.
func FuzzDecoderState(f *testing.F) {
	for _, kind := range Kinds {
		d, _ := NewDecoder(kind)
		comp := compressAll(f, kind, []byte("EcoWatt EcoWatt EcoWatt inverter"), 100)
		d.Decode(make([]byte, 10), comp)
		s, err := d.AppendBinary(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(s, comp)
	}
	f.Fuzz(func(t *testing.T, state, more []byte) {
		for _, kind := range Kinds {
			checkState(t, kind, state, more)
		}
	})
}
