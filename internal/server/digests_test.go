package server

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"testing"
)

// The digests hashed from an upload, however it arrives in pieces, are
// those of each chunk: the short last one included, none extra.
func TestChunkHasherSplitsAtChunks(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, 1023, 1024, 1025, 3072, 100_000} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		var want [][32]byte
		for off := 0; off < size; off += 1024 {
			want = append(want, sha256.Sum256(data[off:min(off+1024, size)]))
		}
		for _, piece := range []int{1, 7, 1024, 1500, 64 << 10} {
			h := newChunkHasher(1024, len(want))
			for rest := data; len(rest) > 0; {
				n := min(piece, len(rest))
				h.Write(rest[:n])
				rest = rest[n:]
			}
			if got := h.digests(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%d bytes in pieces of %d: %d digests, want %d (or they differ)", size, piece, len(got), len(want))
			}
		}
	}
}
