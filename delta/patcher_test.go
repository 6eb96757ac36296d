package delta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/ecowatt/fota/delta/compress"
)

// slot is the target partition: writes outside [0, size) are violations,
// and each Patcher must write at increasing offsets without gaps.
type slot struct {
	t    testing.TB
	data []byte // grows as written, up to size
	size int64
}

// slotWriter is one Patcher's view of a slot (a fresh one after a restart).
type slotWriter struct {
	s    *slot
	next int64 // -1 until the first write
}

func (s *slot) writer() *slotWriter { return &slotWriter{s: s, next: -1} }

func (w *slotWriter) WriteAt(b []byte, off int64) (int, error) {
	s := w.s
	if off < 0 || off+int64(len(b)) > s.size {
		s.t.Errorf("write of %d bytes at %d outside the slot of %d bytes", len(b), off, s.size)
		return 0, errors.New("outside the slot")
	}
	if w.next >= 0 && off != w.next {
		s.t.Errorf("write at %d, want the next offset %d", off, w.next)
	}
	w.next = off + int64(len(b))
	if need := off + int64(len(b)); need > int64(len(s.data)) {
		s.data = append(s.data, make([]byte, need-int64(len(s.data)))...)
	}
	copy(s.data[off:], b)
	return len(b), nil
}

// fromImage is the running slot: reads outside it are violations.
type fromImage struct {
	t testing.TB
	b []byte
}

func (f fromImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(f.b)) {
		f.t.Errorf("read of %d bytes at %d outside from (%d bytes)", len(p), off, len(f.b))
		return 0, io.EOF
	}
	return copy(p, f.b[off:]), nil
}

// splitter hands out piece sizes between 1 and max.
func splitter(r *rand.Rand, max int) func() int { return func() int { return 1 + r.IntN(max) } }

// patchWith pushes patch into a Patcher in pieces, resuming it from its
// checkpoint at each piece boundary if asked, and returns the slot and the
// first error from Write or Close.
func patchWith(t testing.TB, from, patch []byte, maxTo int64, next func() int, resume bool) (*slot, error) {
	s := &slot{t: t, size: maxTo}
	var between func(p *Patcher, pushed int) *Patcher
	if resume {
		between = resumeEach(t, s, from)
	}
	p := NewPatcher(fromImage{t, from}, int64(len(from)), s.writer(), maxTo)
	for pushed := 0; pushed < len(patch); {
		k := min(next(), len(patch)-pushed)
		if _, err := p.Write(patch[pushed : pushed+k]); err != nil {
			return s, err
		}
		pushed += k
		if p.Written() > int64(len(s.data)) {
			t.Fatalf("Written %d after Write, slot holds %d", p.Written(), len(s.data))
		}
		if between != nil {
			p = between(p, pushed)
		}
	}
	return s, p.Close()
}

// resumeEach replaces the Patcher by one resumed from its checkpoint, with
// fresh from and to objects, and checks the checkpoint survives unchanged.
func resumeEach(t testing.TB, s *slot, from []byte) func(p *Patcher, pushed int) *Patcher {
	return func(p *Patcher, pushed int) *Patcher {
		cp, err := p.Checkpoint()
		if err != nil {
			t.Fatalf("checkpoint after %d bytes: %v", pushed, err)
		}
		if len(cp) > MaxCheckpointSize {
			t.Errorf("checkpoint of %d bytes", len(cp))
		}
		q, err := ResumePatcher(fromImage{t, from}, int64(len(from)), s.writer(), s.size, cp)
		if err != nil {
			t.Fatalf("resume after %d bytes: %v", pushed, err)
		}
		again, err := q.Checkpoint()
		if err != nil || !bytes.Equal(again, cp) {
			t.Fatalf("resumed Patcher's checkpoint differs: %v\n%x\n%x", err, again, cp)
		}
		if q.Written() != p.Written() || q.ToSize() != p.ToSize() {
			t.Fatalf("resumed Written/ToSize %d/%d, want %d/%d", q.Written(), q.ToSize(), p.Written(), p.ToSize())
		}
		return q
	}
}

func applied(from, patch []byte) ([]byte, error) {
	var out bytes.Buffer
	_, err := Apply(bytes.NewReader(from), int64(len(from)), bytes.NewReader(patch), &out)
	return out.Bytes(), err
}

var kinds = []string{"none", "crle", "heatshrink"}

// TestPatcherMatchesApply: every pair, every compression, random piece
// sizes from 1 byte to 4 KiB; small patches also a byte at a time.
func TestPatcherMatchesApply(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, kind := range kinds {
		for _, pr := range pairs() {
			patch, err := Create(pr.from, pr.to, CreateOptions{Compression: kind})
			if err != nil {
				t.Fatal(err)
			}
			want, err := applied(pr.from, patch)
			if err != nil {
				t.Fatal(err)
			}
			maxes := []int{4096, 64}
			if len(patch) < 3000 {
				maxes = append(maxes, 1)
			}
			for _, max := range maxes {
				s, err := patchWith(t, pr.from, patch, int64(len(pr.to)), splitter(r, max), false)
				if err != nil {
					t.Fatalf("%s/%s/pieces up to %d: %v", kind, pr.name, max, err)
				}
				if !bytes.Equal(s.data, want) && len(want)+len(s.data) > 0 {
					t.Fatalf("%s/%s/pieces up to %d: made %d bytes, differs from Apply's %d", kind, pr.name, max, len(s.data), len(want))
				}
			}
		}
	}
}

// TestPatcherResumeEverywhere: at every piece boundary the Patcher is
// replaced by one resumed from its checkpoint; the target is the same.
func TestPatcherResumeEverywhere(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, kind := range kinds {
		for i, pr := range pairs() {
			if i%3 != 0 && len(pr.to) < 20000 {
				continue // a third of the small pairs, all the large ones
			}
			patch, err := Create(pr.from, pr.to, CreateOptions{Compression: kind})
			if err != nil {
				t.Fatal(err)
			}
			s := &slot{t: t, size: int64(len(pr.to))}
			sizes := splitter(r, 300)
			p := NewPatcher(fromImage{t, pr.from}, int64(len(pr.from)), s.writer(), s.size)
			resume := resumeEach(t, s, pr.from)
			p = resume(p, 0)
			for pushed := 0; pushed < len(patch); {
				k := min(sizes(), len(patch)-pushed)
				if _, err := p.Write(patch[pushed : pushed+k]); err != nil {
					t.Fatalf("%s/%s: %v", kind, pr.name, err)
				}
				pushed += k
				p = resume(p, pushed)
			}
			if err := p.Close(); err != nil {
				t.Fatalf("%s/%s: close: %v", kind, pr.name, err)
			}
			if !bytes.Equal(s.data, pr.to) && len(pr.to) > 0 {
				t.Fatalf("%s/%s: resumed everywhere, the target differs", kind, pr.name)
			}
		}
	}
}

// TestPatcherPowerCut: a checkpoint now and then; the power goes at a random
// moment after it (the slot holds whatever was written, and garbage after
// it); the device resumes from the checkpoint and pushes the patch again
// from there.
func TestPatcherPowerCut(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	pr := pairs()[len(pairs())-1]
	for _, kind := range kinds {
		patch, err := Create(pr.from, pr.to, CreateOptions{Compression: kind})
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			s := &slot{t: t, size: int64(len(pr.to))}
			p := NewPatcher(fromImage{t, pr.from}, int64(len(pr.from)), s.writer(), s.size)
			var cp []byte
			cpAt, pushed, cut := 0, 0, r.IntN(len(patch))
			for pushed < len(patch) {
				if pushed >= cut {
					// Power cut: garbage after what was written, then resume.
					for i := p.Written(); i < int64(len(s.data)); i++ {
						s.data[i] ^= 0x5a
					}
					if p, err = ResumePatcher(fromImage{t, pr.from}, int64(len(pr.from)), s.writer(), s.size, cp); err != nil {
						t.Fatal(err)
					}
					pushed, cut = cpAt, len(patch)+1
				}
				k := min(1+r.IntN(2048), len(patch)-pushed)
				if _, err := p.Write(patch[pushed : pushed+k]); err != nil {
					t.Fatal(err)
				}
				pushed += k
				if cp == nil || r.IntN(4) == 0 {
					if cp, err = p.Checkpoint(); err != nil {
						t.Fatal(err)
					}
					cpAt = pushed
				}
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(s.data, pr.to) {
				t.Fatalf("%s: target differs after a power cut at patch byte %d", kind, cut)
			}
		}
	}
}

// checkpointsOf returns checkpoints of one patch taken in every phase,
// with the bytes pushed before each.
func checkpointsOf(t *testing.T, from, patch []byte, maxTo int64) (cps [][]byte, at []int) {
	s := &slot{t: t, size: maxTo}
	p := NewPatcher(fromImage{t, from}, int64(len(from)), s.writer(), maxTo)
	seen := map[uint8]int{}
	for i := 0; i <= len(patch); i++ {
		if seen[p.phase] < 3 {
			seen[p.phase]++
			cp, err := p.Checkpoint()
			if err != nil {
				t.Fatal(err)
			}
			cps, at = append(cps, cp), append(at, i)
		}
		if i < len(patch) {
			if _, err := p.Write(patch[i : i+1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return cps, at
}

// TestPatcherDamagedCheckpoint: every byte of a checkpoint flipped, and
// every truncation, is refused. Then the checksum is made to match the
// damage: whatever is accepted must still only write inside the slot and
// only read inside from (the slot and from objects fail the test if not).
func TestPatcherDamagedCheckpoint(t *testing.T) {
	pr := pair{"edits", []byte("EcoWatt firmware 1.0.4 build 17, and some more bytes to move around"),
		[]byte("EcoWatt firmware 1.0.5 build 17, and some more bytes, moved around: 1.0.4")}
	accepted := 0
	for _, kind := range kinds {
		patch, err := Create(pr.from, pr.to, CreateOptions{Compression: kind})
		if err != nil {
			t.Fatal(err)
		}
		maxTo := int64(len(pr.to))
		cps, at := checkpointsOf(t, pr.from, patch, maxTo)
		for c, cp := range cps {
			resume := func(state []byte) (*Patcher, error) {
				return ResumePatcher(fromImage{t, pr.from}, int64(len(pr.from)), (&slot{t: t, size: maxTo}).writer(), maxTo, state)
			}
			for i := range cp {
				for _, x := range []byte{0x01, 0x80, 0xff} {
					bad := append([]byte(nil), cp...)
					bad[i] ^= x
					if _, err := resume(bad); !errors.Is(err, ErrCheckpoint) {
						t.Fatalf("%s checkpoint %d, byte %d ^ %#x: error %v, want ErrCheckpoint", kind, c, i, x, err)
					}
				}
			}
			for n := range len(cp) {
				if _, err := resume(cp[:n]); !errors.Is(err, ErrCheckpoint) {
					t.Fatalf("%s checkpoint %d truncated to %d bytes: error %v", kind, c, n, err)
				}
			}
			if _, err := ResumePatcher(fromImage{t, pr.from}, int64(len(pr.from))+1, (&slot{t: t, size: maxTo}).writer(), maxTo, cp); !errors.Is(err, ErrCheckpoint) {
				t.Fatalf("resumed with another from size: %v", err)
			}
			// Damage behind a matching checksum.
			body := cp[:len(cp)-4]
			for i := range body {
				for _, x := range []byte{0x01, 0x02, 0x10, 0x40, 0x80, 0xff} {
					bad := append([]byte(nil), body...)
					bad[i] ^= x
					bad = binary.LittleEndian.AppendUint32(bad, crc32.ChecksumIEEE(bad))
					p, err := resume(bad)
					if err != nil {
						if !errors.Is(err, ErrCheckpoint) {
							t.Fatalf("refused without ErrCheckpoint: %v", err)
						}
						continue
					}
					accepted++
					// Carry on with the rest of the patch: it may fail, but
					// the slot and from catch any access out of range.
					if _, err := p.Write(patch[at[c]:]); err == nil {
						p.Close()
					}
				}
			}
		}
	}
	t.Logf("%d damaged checkpoints with a matching checksum were accepted and ran safely", accepted)
}

// TestPatcherTooLarge: a target larger than the slot is refused before
// anything is written; a slot of exactly its size is fine.
func TestPatcherTooLarge(t *testing.T) {
	pr := pairs()[len(pairs())-1]
	for _, kind := range kinds {
		patch, err := Create(pr.from, pr.to, CreateOptions{Compression: kind})
		if err != nil {
			t.Fatal(err)
		}
		s, err := patchWith(t, pr.from, patch, int64(len(pr.to))-1, splitter(rand.New(rand.NewPCG(1, 1)), 100), false)
		if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: error %v, want ErrTooLarge and not ErrCorrupt", kind, err)
		}
		if len(s.data) != 0 {
			t.Fatalf("%s: %d bytes written before the refusal", kind, len(s.data))
		}
		if _, err := patchWith(t, pr.from, patch, int64(len(pr.to)), splitter(rand.New(rand.NewPCG(1, 1)), 100), false); err != nil {
			t.Fatalf("%s: slot of exactly the target size: %v", kind, err)
		}
	}
}

// TestPatcherTruncated: every strict prefix of a patch is refused at Close
// (or earlier), as Apply refuses it.
func TestPatcherTruncated(t *testing.T) {
	pr := pair{"edit", []byte("0123456789abcdefghijklmnopqrstuvwxyz, 0123456789abcdefghijklmnopqrstuvwxyz"),
		[]byte("0123456789abcdefgh<INSERTED>ijklmnopqrstuvwxyz, 0123456789abcdefghijklmnopqrstuvwxyz!")}
	for _, kind := range kinds {
		patch, err := Create(pr.from, pr.to, CreateOptions{Compression: kind})
		if err != nil {
			t.Fatal(err)
		}
		for n := range len(patch) {
			_, aerr := applied(pr.from, patch[:n])
			_, perr := patchWith(t, pr.from, patch[:n], 1<<20, func() int { return 3 }, false)
			if !errors.Is(perr, ErrCorrupt) {
				t.Fatalf("%s: patch cut to %d of %d bytes: error %v, want ErrCorrupt", kind, n, len(patch), perr)
			}
			if aerr == nil {
				t.Fatalf("%s: Apply accepted the patch cut to %d bytes", kind, n)
			}
		}
	}
}

// TestPatcherTrailing: bytes after the end are refused by Write (crle's
// empty segments aside, which Apply accepts too).
func TestPatcherTrailing(t *testing.T) {
	pr := pairs()[6]
	for _, tt := range []struct {
		kind, tail string
		ok         bool
	}{
		{"none", "\x00", false},
		{"heatshrink", "\x00", false},
		{"heatshrink", "\x80", false},
		{"crle", "\x00\x05ab", false},
		{"crle", "\x01\x02a", false},
		{"crle", "\x00\x00\x01\x00a", true},
	} {
		patch, err := Create(pr.from, pr.to, CreateOptions{Compression: tt.kind})
		if err != nil {
			t.Fatal(err)
		}
		_, aerr := applied(pr.from, append(patch, tt.tail...))
		if (aerr == nil) != tt.ok {
			t.Fatalf("%s + %x: Apply says %v", tt.kind, tt.tail, aerr)
		}
		s := &slot{t: t, size: 1 << 20}
		p := NewPatcher(fromImage{t, pr.from}, int64(len(pr.from)), s.writer(), s.size)
		if _, err := p.Write(patch); err != nil {
			t.Fatal(err)
		}
		_, werr := p.Write([]byte(tt.tail))
		if tt.ok {
			if werr != nil || p.Close() != nil {
				t.Fatalf("%s + %x refused: %v", tt.kind, tt.tail, werr)
			}
		} else if !errors.Is(werr, ErrCorrupt) {
			t.Fatalf("%s + %x: Write error %v, want ErrCorrupt", tt.kind, tt.tail, werr)
		}
	}
}

// TestPatcherVectors: the shared vectors, whole and a byte at a time.
func TestPatcherVectors(t *testing.T) {
	for _, v := range readVectors(t) {
		for _, piece := range []int{1, 1 << 20} {
			t.Run(fmt.Sprintf("%s/%d", v.name, piece), func(t *testing.T) {
				s, err := patchWith(t, v.from, v.patch, 1<<20, func() int { return piece }, false)
				switch v.expect {
				case "success":
					if err != nil || !bytes.Equal(s.data, v.to) && len(v.to) > 0 {
						t.Fatalf("made %x, %v; want %x", s.data, err, v.to)
					}
				case "corrupt":
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("error %v, want ErrCorrupt", err)
					}
				case "unsupported":
					if err == nil || errors.Is(err, ErrCorrupt) {
						t.Fatalf("error %v, want an unsupported-patch error", err)
					}
				default:
					t.Fatalf("unknown expect %q", v.expect)
				}
			})
		}
	}
}

// TestPatcherRefusesLargeWindow: heatshrink streams with a window over 2^8
// bytes are unsupported (Apply takes them; devices do not).
func TestPatcherRefusesLargeWindow(t *testing.T) {
	// to size 1; heatshrink header window 9, lookahead 7; then the literals
	// 00 (data format), 00 (diff size), 01 (extra), 'a', 00 (adjustment).
	patch := []byte{0x04, 0x01, 0x54}
	var bits []byte
	for _, c := range []byte{0, 0, 1, 'a', 0} {
		bits = append(bits, 1)
		for i := 7; i >= 0; i-- {
			bits = append(bits, c>>i&1)
		}
	}
	for i := 0; i < len(bits); i += 8 {
		var b byte
		for j := range 8 {
			if i+j < len(bits) {
				b |= bits[i+j] << (7 - j)
			}
		}
		patch = append(patch, b)
	}
	if out, err := applied(nil, patch); err != nil || string(out) != "a" {
		t.Fatalf("Apply = %q, %v", out, err)
	}
	_, err := patchWith(t, nil, patch, 10, func() int { return 100 }, false)
	if !errors.Is(err, compress.ErrWindowTooLarge) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("error %v, want ErrWindowTooLarge", err)
	}
}

// TestPatcherErrorsStick: after an error every call returns it and no
// checkpoint is given.
func TestPatcherErrorsStick(t *testing.T) {
	s := &slot{t: t, size: 100}
	p := NewPatcher(fromImage{t, nil}, 0, s.writer(), s.size)
	if _, err := p.Write([]byte{0x80, 0x01}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("bad header: %v", err)
	}
	if _, err := p.Write([]byte{0}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("write after error: %v", err)
	}
	if err := p.Close(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("close after error: %v", err)
	}
	if _, err := p.Checkpoint(); err == nil {
		t.Fatal("checkpoint after an error")
	}
	if p.ToSize() != -1 {
		t.Fatalf("ToSize %d before a header was read", p.ToSize())
	}
}

// TestPatcherMemory: applying a 2 MiB image allocates a fixed amount, not an
// amount that grows with the image.
func TestPatcherMemory(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	from := firmwareLike(r, 2<<20)
	to := edit(r, shiftAddresses(from), 50)
	patch, err := Create(from, to, CreateOptions{Compression: "heatshrink"})
	if err != nil {
		t.Fatal(err)
	}
	out := make(sliceWriterAt, len(to))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p := NewPatcher(bytes.NewReader(from), int64(len(from)), out, int64(len(out)))
	for i := 0; i < len(patch); i += 1000 {
		if _, err := p.Write(patch[i:min(i+1000, len(patch))]); err != nil {
			t.Fatal(err)
		}
	}
	err = p.Close()
	runtime.ReadMemStats(&after)
	if err != nil || !bytes.Equal(out, to) {
		t.Fatalf("apply failed: %v", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 12<<10 {
		t.Errorf("applying %d bytes allocated %d bytes", len(to), grew)
	}
}

type sliceWriterAt []byte

func (s sliceWriterAt) WriteAt(b []byte, off int64) (int, error) { return copy(s[off:], b), nil }

// FuzzPatcher: arbitrary patches pushed in arbitrary pieces, with a
// checkpoint round trip at every boundary, never panic, never touch bytes
// outside from or the slot, and agree with Apply.
func FuzzPatcher(f *testing.F) {
	seeds := 0
	for _, kind := range kinds {
		for _, p := range pairs() {
			if len(p.from) > 1000 || len(p.to) > 1000 {
				continue
			}
			patch, err := Create(p.from, p.to, CreateOptions{Compression: kind})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(p.from, patch, []byte{byte(seeds), 3, 200}, uint16(len(p.to)))
			seeds++
		}
	}
	f.Fuzz(func(t *testing.T, from, patch, splits []byte, maxTo uint16) {
		i := 0
		next := func() int {
			if len(splits) == 0 {
				return len(patch)
			}
			i++
			return 1 + int(splits[i%len(splits)])
		}
		s, perr := patchWith(t, from, patch, int64(maxTo), next, true)
		want, aerr := applied(from, patch)
		info, ierr := PatchInfo(patch)
		switch {
		case errors.Is(perr, ErrTooLarge):
			if ierr != nil || info.ToSize <= int64(maxTo) {
				t.Fatalf("ErrTooLarge for %+v, %v in a slot of %d", info, ierr, maxTo)
			}
		case errors.Is(perr, compress.ErrWindowTooLarge):
		case (perr == nil) != (aerr == nil):
			t.Fatalf("Patcher: %v; Apply: %v", perr, aerr)
		case perr == nil && !bytes.Equal(s.data, want) && len(want)+len(s.data) > 0:
			t.Fatalf("Patcher made %x, Apply %x", s.data, want)
		}
	})
}

// BenchmarkPatcher applies a heatshrink patch between two 4 MiB images
// (firmware-like, relinked and edited) in 4 KiB pieces; MB/s is of the to
// image.
func BenchmarkPatcher(b *testing.B) {
	r := rand.New(rand.NewPCG(19, 20))
	from := firmwareLike(r, 4<<20)
	to := edit(r, shiftAddresses(from), 200)
	patch, err := Create(from, to, CreateOptions{Compression: "heatshrink"})
	if err != nil {
		b.Fatal(err)
	}
	out := make(sliceWriterAt, len(to))
	b.SetBytes(int64(len(to)))
	for b.Loop() {
		p := NewPatcher(bytes.NewReader(from), int64(len(from)), out, int64(len(out)))
		for i := 0; i < len(patch); i += 4096 {
			if _, err := p.Write(patch[i:min(i+4096, len(patch))]); err != nil {
				b.Fatal(err)
			}
		}
		if err := p.Close(); err != nil {
			b.Fatal(err)
		}
	}
	if !bytes.Equal(out, to) {
		b.Fatal("wrong target")
	}
	b.ReportMetric(float64(len(patch)), "patch-bytes")
}

// TestCheckpointSizeBound: a checkpoint with every field at its largest
// still fits MaxCheckpointSize, and resumes.
func TestCheckpointSizeBound(t *testing.T) {
	const fromSize = 1 << 62
	p := NewPatcher(fromImage{t, nil}, fromSize, (&slot{t: t, size: MaxSize}).writer(), MaxSize)
	if err := p.startStream(MaxSize, "heatshrink"); err != nil {
		t.Fatal(err)
	}
	p.phase, p.toPos, p.fromPos, p.chunk = phAdjust, MaxSize, fromSize, maxChunks
	p.size = sizeField{mag: 1<<20 - 1, n: 3, neg: true}
	ds := []byte{'H', 7, 0x44, hsLengthPhase, 7}
	for _, v := range []uint64{127, 255, 255, 128, 256, 1 << 62} {
		ds = binary.AppendUvarint(ds, v)
	}
	ds = append(ds, bytes.Repeat([]byte{0xff}, 256)...)
	if err := p.dec.UnmarshalBinary(ds); err != nil {
		t.Fatal(err)
	}
	cp, err := p.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if len(cp) > MaxCheckpointSize {
		t.Fatalf("checkpoint of %d bytes, more than MaxCheckpointSize %d", len(cp), MaxCheckpointSize)
	}
	t.Logf("largest checkpoint: %d bytes", len(cp))
	if _, err := ResumePatcher(fromImage{t, nil}, fromSize, (&slot{t: t, size: MaxSize}).writer(), MaxSize, cp); err != nil {
		t.Fatal(err)
	}
}

// hsLengthPhase is the heatshrink decoder's last phase (reading a copy's
// length), the largest phase value its state holds.
const hsLengthPhase = 3
