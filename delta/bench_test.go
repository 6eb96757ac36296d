package delta

import (
	"bytes"
	"cmp"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
)

// firmwarePair makes a 4 MiB "from" image and a "to" image that a new
// firmware version could be, deterministically:
//
//   - from is 32-bit words, 7 in 8 drawn from a vocabulary of 4,096 words
//     (code repeats its instructions and idioms, so the matcher meets many
//     short candidate matches, as it does on real images), the rest random;
//   - to is from with 300 edits spread over it: 120 insertions of 16 bytes to
//     4 KiB of new words (code added), 60 deletions of up to 2 KiB, and 120
//     regions of 1-16 KiB where one byte in every 8-64 changes (addresses and
//     offsets that moved because code before them grew or shrank).
//
// Real pairs made by scripts/delta-figures.sh are smaller (about 880 KiB);
// this pair is for speed at the 4 MiB an ESP32 app slot holds.
func firmwarePair(size int) (from, to []byte) {
	r := rand.New(rand.NewPCG(18, 2026))
	vocab := make([]uint32, 4096)
	for i := range vocab {
		vocab[i] = r.Uint32()
	}
	word := func(dst []byte) []byte {
		w := vocab[r.IntN(len(vocab))]
		if r.IntN(8) == 0 {
			w = r.Uint32()
		}
		return append(dst, byte(w), byte(w>>8), byte(w>>16), byte(w>>24))
	}
	from = make([]byte, 0, size)
	for len(from) < size {
		from = word(from)
	}
	from = from[:size]

	// Edits at sorted, distinct positions, applied front to back.
	type edit struct{ at, kind int }
	edits := make([]edit, 0, 300)
	for k, n := range []int{120, 60, 120} {
		for range n {
			edits = append(edits, edit{r.IntN(size), k})
		}
	}
	// Stable: insertion order breaks ties, so the pair is the same every run.
	slices.SortStableFunc(edits, func(a, b edit) int { return cmp.Compare(a.at, b.at) })
	to = make([]byte, 0, size+size/8)
	pos := 0
	for _, e := range edits {
		if e.at < pos {
			continue // inside the previous deletion or changed region
		}
		to = append(to, from[pos:e.at]...)
		pos = e.at
		switch e.kind {
		case 0: // code added
			n := 16 + r.IntN(4096-16)
			for end := len(to) + n; len(to) < end; {
				to = word(to)
			}
		case 1: // code removed
			pos = min(size, pos+1+r.IntN(2048))
		case 2: // references moved
			end := min(size, pos+1024+r.IntN(15*1024))
			region := append([]byte(nil), from[pos:end]...)
			for i := r.IntN(8); i < len(region); i += 8 + r.IntN(57) {
				region[i] += byte(1 + r.IntN(255))
			}
			to = append(to, region...)
			pos = end
		}
	}
	to = append(to, from[pos:]...)
	return from, to
}

// BenchmarkCreate4MiB: patch creation for a 4 MiB image (target: under 10 s
// on one core; run with -cpu 1 -benchtime 1x). It reports the patch's size
// as a share of the to image, so a change to match selection that trades
// size for speed shows.
func BenchmarkCreate4MiB(b *testing.B) {
	from, to := firmwarePair(4 << 20)
	b.SetBytes(int64(len(to)))
	b.ResetTimer()
	var patch []byte
	for b.Loop() {
		var err error
		patch, err = Create(from, to, CreateOptions{Compression: "heatshrink"})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/op")
	b.ReportMetric(100*float64(len(patch))/float64(len(to)), "%patch")
}

// BenchmarkApply4MiB: applying that pair's heatshrink patch on the host
// (target: at least 50 MiB/s of to image).
func BenchmarkApply4MiB(b *testing.B) {
	from, to := firmwarePair(4 << 20)
	patch, err := Create(from, to, CreateOptions{Compression: "heatshrink"})
	if err != nil {
		b.Fatal(err)
	}
	var out bytes.Buffer
	out.Grow(len(to))
	if _, err := Apply(bytes.NewReader(from), int64(len(from)), bytes.NewReader(patch), &out); err != nil {
		b.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), to) {
		b.Fatal("the patch does not rebuild the to image")
	}
	b.SetBytes(int64(len(to)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Apply(bytes.NewReader(from), int64(len(from)), bytes.NewReader(patch), io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
