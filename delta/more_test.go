package delta

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

// TestDiffIsMostlyZero checks the diff is compact where it counts: a 1 MiB
// pseudo-random image with a small edit in the middle becomes a patch whose
// bytes are nearly all zero (left for the compressor to shrink) with almost
// no extra data. Size targets belong to the compressed patches.
func TestDiffIsMostlyZero(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	from := randBytes(r, 1<<20)
	to := append([]byte(nil), from...)
	copy(to[1<<19:], "EcoWatt 1.0.5") // a changed version string
	to[1<<19+100] ^= 0x55             // a changed constant nearby
	to = append(to[:600000], append([]byte("inserted"), to[600000:]...)...)
	patch, err := Create(from, to, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nonzero := 0
	for _, b := range patch {
		if b != 0 {
			nonzero++
		}
	}
	if len(patch) > len(to)+200 {
		t.Errorf("patch is %d bytes for a %d byte image: chunk overhead too high", len(patch), len(to))
	}
	if nonzero > 200 {
		t.Errorf("patch has %d non-zero bytes, want < 200: the diff does not follow the matches", nonzero)
	}
	var out bytes.Buffer
	if _, err := Apply(bytes.NewReader(from), int64(len(from)), bytes.NewReader(patch), &out); err != nil || !bytes.Equal(out.Bytes(), to) {
		t.Fatalf("round trip failed: %v", err)
	}
}

// TestApplyStreams applies a large patch through readers that hand
// out one byte at a time and a from that is not in memory as a slice, so
// nothing can rely on reading the whole image at once.
func TestApplyStreams(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	from := randBytes(r, 300000)
	to := edit(r, from, 50)
	patch, err := Create(from, to, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	n, err := Apply(bytes.NewReader(from), int64(len(from)), oneByte{bytes.NewReader(patch)}, &out)
	if err != nil || n != int64(len(to)) || !bytes.Equal(out.Bytes(), to) {
		t.Fatalf("Apply = %d, %v", n, err)
	}
}

type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

// FuzzApply: arbitrary patches must never panic, never write more than
// their header's to size, and report exactly what they wrote.
func FuzzApply(f *testing.F) {
	seeds := 0
	for _, p := range pairs() {
		if len(p.from) > 1000 || len(p.to) > 1000 {
			continue
		}
		patch, err := Create(p.from, p.to, CreateOptions{})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p.from, patch)
		seeds++
	}
	if seeds < 5 {
		f.Fatalf("only %d seeds: the fuzz corpus must not be empty", seeds)
	}
	f.Fuzz(func(t *testing.T, from, patch []byte) {
		var out bytes.Buffer
		n, err := Apply(bytes.NewReader(from), int64(len(from)), bytes.NewReader(patch), &out)
		if n != int64(out.Len()) {
			t.Fatalf("reported %d bytes, wrote %d", n, out.Len())
		}
		info, ierr := PatchInfo(patch)
		if ierr == nil && n > info.ToSize {
			t.Fatalf("wrote %d bytes, more than the to size %d", n, info.ToSize)
		}
		if err == nil && (ierr != nil || n != info.ToSize) {
			t.Fatalf("applied %d bytes without error, but PatchInfo = %+v, %v", n, info, ierr)
		}
	})
}

// FuzzRoundTrip: Create then Apply gives back to, for any pair.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("hello world"), []byte("hello, world!"))
	f.Add([]byte{}, []byte{1, 2, 3})
	f.Add(bytes.Repeat([]byte{0xff}, 100), bytes.Repeat([]byte{0xfe}, 90))
	f.Fuzz(func(t *testing.T, from, to []byte) {
		patch, err := Create(from, to, CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if _, err := Apply(bytes.NewReader(from), int64(len(from)), bytes.NewReader(patch), &out); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if !bytes.Equal(out.Bytes(), to) {
			t.Fatalf("round trip gave %x, want %x", out.Bytes(), to)
		}
	})
}

// TestApproximateMatches: relinking changes a byte in every 16, so exact
// matches are at most 15 bytes long; the approximate matches must still
// carry nearly all of to as diff (mostly zeros), not as extra bytes.
// (Like bsdiff, the diff needs exact seeds longer than minGain: changes
// denser than that lose the alignment.)
func TestApproximateMatches(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	from := firmwareLike(r, 100000)
	to := shiftAddresses(from)
	// An inserted function moves everything after it: a second alignment.
	to = append(to[:40000], append(randBytes(r, 300), to[40000:]...)...)
	extra, chunks := 0, diffChunks(from, to)
	for _, c := range chunks {
		extra += len(c.extra)
	}
	if extra > len(to)/100 {
		t.Errorf("%d of %d bytes sent as extra in %d chunks: approximate matching is not working", extra, len(to), len(chunks))
	}
	t.Logf("%d chunks, %d extra bytes of %d", len(chunks), extra, len(to))
}
