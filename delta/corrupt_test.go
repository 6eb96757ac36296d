package delta

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// TestApplyCallsUndecodableStreamsCorrupt: a compressed stream cut short
// or damaged is ErrCorrupt from Apply as from the Patcher, while a source
// that fails is its own error.
func TestApplyCallsUndecodableStreamsCorrupt(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	from := make([]byte, 20000)
	for i := range from {
		from[i] = byte(rng.IntN(16))
	}
	to := append([]byte(nil), from...)
	for i := 100; i < len(to); i += 97 {
		to[i] ^= 0x5a
	}
	for _, comp := range []string{"heatshrink", "crle"} {
		patch, err := Create(from, to, CreateOptions{Compression: comp})
		if err != nil {
			t.Fatal(err)
		}
		for _, cut := range []int{len(patch) / 3, len(patch) / 2, len(patch) - 1} {
			_, err := Apply(bytes.NewReader(from), int64(len(from)), bytes.NewReader(patch[:cut]), io.Discard)
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s cut at %d of %d: %v, want ErrCorrupt", comp, cut, len(patch), err)
			}
		}
		failing := io.MultiReader(bytes.NewReader(patch[:len(patch)/2]), errReader{})
		if _, err := Apply(bytes.NewReader(from), int64(len(from)), failing, io.Discard); errors.Is(err, ErrCorrupt) || !errors.Is(err, errSource) {
			t.Errorf("%s: a failing source gave %v, want its own error", comp, err)
		}
	}
}

var errSource = errors.New("flash read failed")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errSource }
