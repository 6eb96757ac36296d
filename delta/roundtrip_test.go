package delta

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// pair is a from/to pair the tests patch.
type pair struct {
	name     string
	from, to []byte
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// edit returns a copy of b with small edits, inserts and deletions, the
// kind a rebuilt firmware image shows.
func edit(r *rand.Rand, b []byte, edits int) []byte {
	out := append([]byte(nil), b...)
	for range edits {
		if len(out) == 0 {
			out = append(out, byte(r.Uint32()))
			continue
		}
		at := r.IntN(len(out))
		switch r.IntN(4) {
		case 0: // change a few bytes
			for i := at; i < min(at+1+r.IntN(4), len(out)); i++ {
				out[i] += byte(1 + r.IntN(255))
			}
		case 1: // insert
			ins := randBytes(r, 1+r.IntN(64))
			out = append(out[:at], append(ins, out[at:]...)...)
		case 2: // delete
			end := min(at+1+r.IntN(64), len(out))
			out = append(out[:at], out[end:]...)
		case 3: // move a block
			end := min(at+1+r.IntN(256), len(out))
			blk := append([]byte(nil), out[at:end]...)
			out = append(out[:at], out[end:]...)
			to := r.IntN(len(out) + 1)
			out = append(out[:to], append(blk, out[to:]...)...)
		}
	}
	return out
}

// firmwareLike is structured data: repeated words with a slowly changing
// field, padding, so that near-matches (not exact ones) dominate.
func firmwareLike(r *rand.Rand, n int) []byte {
	b := make([]byte, 0, n)
	for len(b) < n {
		switch r.IntN(3) {
		case 0:
			b = append(b, bytes.Repeat([]byte{0xff}, 1+r.IntN(100))...)
		default:
			addr := r.Uint32()
			for i := 0; i < 1+r.IntN(40); i++ {
				b = append(b, 0x36, 0x41, 0x00, byte(addr), byte(addr>>8), byte(i))
			}
		}
	}
	return b[:n]
}

// shiftAddresses changes one byte in every 16 a little, as relinking
// changes addresses and offsets spread through the code.
func shiftAddresses(b []byte) []byte {
	out := append([]byte(nil), b...)
	for i := 3; i < len(out); i += 16 {
		out[i] += 4
	}
	return out
}

func pairs() []pair {
	r := rand.New(rand.NewPCG(1, 2))
	ps := []pair{
		{"both empty", nil, nil},
		{"empty from", nil, randBytes(r, 100)},
		{"empty to", randBytes(r, 100), nil},
		{"one byte", []byte{1}, []byte{2}},
		{"identical", bytes.Repeat([]byte("abc"), 50), bytes.Repeat([]byte("abc"), 50)},
		{"unrelated", randBytes(r, 500), randBytes(r, 700)},
		{"zeros to ones", make([]byte, 1000), bytes.Repeat([]byte{1}, 1000)},
		{"prefix", []byte("hello world"), []byte("hello")},
		{"suffix grows", []byte("hello"), []byte("hello world, hello world")},
	}
	for i := range 30 {
		n := []int{1, 7, 64, 300, 4096, 20000}[i%6]
		base := randBytes(r, n)
		if i%2 == 1 {
			base = firmwareLike(r, n)
		}
		ps = append(ps, pair{fmt.Sprintf("edits %d/%d", i, n), base, edit(r, base, 1+r.IntN(20))})
	}
	fw := firmwareLike(r, 50000)
	ps = append(ps, pair{"relinked", fw, shiftAddresses(fw)})
	ps = append(ps, pair{"relinked and edited", fw, edit(r, shiftAddresses(fw), 10)})
	return ps
}

func TestRoundTrip(t *testing.T) {
	for _, kind := range []string{"none", "crle", "heatshrink"} {
		for _, p := range pairs() {
			t.Run(kind+"/"+p.name, func(t *testing.T) { roundTrip(t, p, kind) })
		}
	}
}

func roundTrip(t *testing.T, p pair, kind string) {
	t.Helper()
	patch, err := Create(p.from, p.to, CreateOptions{Compression: kind})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	n, err := Apply(bytes.NewReader(p.from), int64(len(p.from)), bytes.NewReader(patch), &out)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if n != int64(len(p.to)) || !bytes.Equal(out.Bytes(), p.to) {
		t.Fatalf("apply made %d bytes, want %d; equal: %v", n, len(p.to), bytes.Equal(out.Bytes(), p.to))
	}
	info, err := PatchInfo(patch)
	if err != nil || info != (Info{Type: "sequential", Compression: kind, ToSize: int64(len(p.to))}) {
		t.Fatalf("PatchInfo = %+v, %v", info, err)
	}
}
