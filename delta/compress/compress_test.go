package compress

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func compressAll(t testing.TB, kind string, data []byte, chunk int) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := NewWriter(kind, &out)
	if err != nil {
		t.Fatal(err)
	}
	for len(data) > 0 {
		n := min(chunk, len(data))
		if _, err := w.Write(data[:n]); err != nil {
			t.Fatalf("%s: write: %v", kind, err)
		}
		data = data[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatalf("%s: close: %v", kind, err)
	}
	return out.Bytes()
}

// oneByteReader hides io.ByteReader and returns one byte per Read, the
// worst case for a streaming decoder.
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func decompressAll(kind string, data []byte) ([]byte, error) {
	r, err := NewReader(kind, oneByteReader{bytes.NewReader(data)})
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// firmwareLike is a deterministic stand-in for a firmware image: words drawn
// from a small instruction set, string tables, and erased-flash padding.
func firmwareLike(n int) []byte {
	r := rand.New(rand.NewPCG(18, 2026))
	ops := make([][]byte, 64)
	for i := range ops {
		ops[i] = []byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}
	}
	words := strings.Fields("ecowatt fota update slot boot image error inverter meter grid power")
	var b bytes.Buffer
	for b.Len() < n {
		switch k := r.IntN(100); {
		case k < 80:
			b.Write(ops[r.IntN(len(ops))])
		case k < 90:
			b.WriteString(words[r.IntN(len(words))] + "\x00")
		case k < 92:
			b.Write(bytes.Repeat([]byte{0xff}, r.IntN(300)))
		default:
			var w [4]byte
			for i := range w {
				w[i] = byte(r.Uint32())
			}
			b.Write(w[:])
		}
	}
	return b.Bytes()[:n]
}

func sampleInputs() map[string][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 20000)
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	return map[string][]byte{
		"empty":         nil,
		"one":           {7},
		"zeros":         make([]byte, 10000),
		"ff":            bytes.Repeat([]byte{0xff}, 5000),
		"random":        random,
		"text":          []byte(strings.Repeat("The EcoWatt inverter checks in every hour. ", 300)),
		"runs-5-6":      bytes.Repeat([]byte("AAAAABBBBBBx"), 100),
		"firmware-like": firmwareLike(200000),
	}
}

func TestRoundTrip(t *testing.T) {
	for name, data := range sampleInputs() {
		for _, kind := range Kinds {
			for _, chunk := range []int{1, 7, 4096, 1 << 20} {
				if chunk == 1 && len(data) > 20000 {
					continue
				}
				comp := compressAll(t, kind, data, chunk)
				got, err := decompressAll(kind, comp)
				if err != nil {
					t.Fatalf("%s/%s/chunk %d: %v", name, kind, chunk, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("%s/%s/chunk %d: round trip differs (%d bytes back, want %d)", name, kind, chunk, len(got), len(data))
				}
				// The encoders' output must not depend on how the input was split.
				if whole := compressAll(t, kind, data, len(data)+1); !bytes.Equal(whole, comp) {
					t.Fatalf("%s/%s: output depends on write size %d", name, kind, chunk)
				}
			}
			if chunk := len(data); chunk > 0 {
				t.Logf("%-14s %-10s %7d -> %7d (%.1f%%)", name, kind, len(data), len(compressAll(t, kind, data, chunk)),
					100*float64(len(compressAll(t, kind, data, chunk)))/float64(len(data)))
			}
		}
	}
}

// TestVectors checks the Go encoders against files made by the reference
// implementations (see testdata/README.md).
func TestVectors(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.bin")
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) < 5 {
		t.Fatalf("only %d vectors in testdata", len(inputs))
	}
	for _, in := range inputs {
		data, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, kind := range []string{"crle", "heatshrink"} {
			name := strings.TrimSuffix(in, ".bin") + "." + kind
			t.Run(filepath.Base(name), func(t *testing.T) {
				want, err := os.ReadFile(name)
				if err != nil {
					t.Fatal(err)
				}
				if got := compressAll(t, kind, data, 100); !bytes.Equal(got, want) {
					t.Errorf("encoder output differs from the reference: got %d bytes, want %d\ngot  % x\nwant % x",
						len(got), len(want), head(got), head(want))
				}
				got, err := decompressAll(kind, want)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data) {
					t.Errorf("decoded reference differs from the input")
				}
			})
		}
	}
}

func head(b []byte) []byte { return b[:min(len(b), 32)] }

func TestMalformed(t *testing.T) {
	errCorrupt := errors.New("any error")
	tests := []struct {
		name, kind string
		in         []byte
		want       error
	}{
		{"crle bad kind", "crle", []byte{0x02, 0x01, 'A'}, errCRLEKind},
		{"crle truncated size", "crle", []byte{0x00, 0x80}, io.ErrUnexpectedEOF},
		{"crle truncated scattered", "crle", []byte{0x00, 0x05, 'a', 'b'}, io.ErrUnexpectedEOF},
		{"crle truncated repeated value", "crle", []byte{0x01, 0x08}, io.ErrUnexpectedEOF},
		{"crle kind only", "crle", []byte{0x01}, io.ErrUnexpectedEOF},
		{"crle size overflow", "crle", append([]byte{0x00}, bytes.Repeat([]byte{0xff}, 10)...), errCRLEOverflow},
		{"heatshrink empty", "heatshrink", nil, errHSTruncated},
		{"heatshrink window too big", "heatshrink", []byte{0xc4}, errHSHeader},
		{"heatshrink lookahead not below window", "heatshrink", []byte{0x05}, errHSHeader},
		// A literal tag and 7 of its 8 bits.
		{"heatshrink truncated literal", "heatshrink", []byte{0x44, 0xff}, errHSTruncated},
		// A copy tag and 7 of its 8 index bits.
		{"heatshrink truncated backref", "heatshrink", []byte{0x44, 0x00}, errHSTruncated},
		// One literal 'A' (9 bits) then non-zero padding.
		{"heatshrink non-zero padding", "heatshrink", []byte{0x44, 0xa0, 0xff}, errHSTruncated},
		{"unknown kind", "lzma", nil, errCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decompressAll(tt.kind, tt.in)
			if err == nil {
				t.Fatalf("decoded %q without error", got)
			}
			if tt.want != errCorrupt && !errors.Is(err, tt.want) {
				t.Fatalf("error %q, want one wrapping %q", err, tt.want)
			}
		})
	}
	if _, err := NewWriter("lzma", io.Discard); err == nil {
		t.Error("NewWriter accepted an unknown kind")
	}
}

// TestBeforeStart: the C encoder copies from the zeros before the start of
// the stream, so the decoder must accept such copies and yield zeros.
func TestBeforeStart(t *testing.T) {
	// 0x44 header; tag 0, index 0 (distance 1), count 7 (8 bytes), then padding.
	got, err := decompressAll("heatshrink", []byte{0x44, 0x00, 0x07})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, 8)) {
		t.Fatalf("got % x, want 8 zeros", got)
	}
}

// TestBoundedMemory decodes streams that expand a thousandfold and checks
// that the heap grows by no more than the window and read buffer, not with
// the output.
func TestBoundedMemory(t *testing.T) {
	data := make([]byte, 32<<20)
	for _, kind := range []string{"crle", "heatshrink"} {
		comp := compressAll(t, kind, data, len(data))
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r, err := NewReader(kind, oneByteReader{bytes.NewReader(comp)})
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, r, make([]byte, 512))
		runtime.ReadMemStats(&after)
		if err != nil || n != int64(len(data)) {
			t.Fatalf("%s: decoded %d bytes, err %v", kind, n, err)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<10 {
			t.Errorf("%s: decoding %d bytes allocated %d bytes", kind, n, grew)
		}
	}
}

func fuzzDecoder(f *testing.F, kind string) {
	seeds, _ := filepath.Glob("testdata/*." + kind)
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	if len(seeds) == 0 {
		f.Fatalf("no %s seeds in testdata", kind)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := NewReader(kind, bytes.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		// Bound the output: crle can ask for 2^63 repetitions.
		out, err := io.ReadAll(io.LimitReader(r, 1<<20))
		if hr, ok := r.(*heatshrinkReader); ok && len(hr.window) > 1<<maxWindowBits {
			t.Fatalf("window of %d bytes", len(hr.window))
		}
		if err != nil || len(out) == 1<<20 {
			return
		}
		// What decodes must survive a round trip through our encoder.
		again, err := decompressAll(kind, compressAll(t, kind, out, 4096))
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("round trip of decoded output failed: %v", err)
		}
	})
}

func FuzzCRLEReader(f *testing.F)       { fuzzDecoder(f, "crle") }
func FuzzHeatshrinkReader(f *testing.F) { fuzzDecoder(f, "heatshrink") }

func BenchmarkCompress(b *testing.B) {
	data := firmwareLike(4 << 20)
	for _, kind := range Kinds {
		b.Run(kind, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			var n int
			for b.Loop() {
				n = len(compressAll(b, kind, data, 64<<10))
			}
			b.ReportMetric(float64(n)/float64(len(data)), "ratio")
		})
	}
}

func BenchmarkDecompress(b *testing.B) {
	data := firmwareLike(4 << 20)
	for _, kind := range Kinds {
		comp := compressAll(b, kind, data, len(data))
		b.Run(kind, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				r, err := NewReader(kind, bytes.NewReader(comp))
				if err != nil {
					b.Fatal(err)
				}
				if n, err := io.Copy(io.Discard, r); err != nil || n != int64(len(data)) {
					b.Fatalf("decoded %d bytes: %v", n, err)
				}
			}
		})
	}
}
