package delta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/ecowatt/fota/delta/compress"
)

// ErrTooLarge is wrapped by the error a Patcher returns for a patch whose
// header declares a to image larger than the slot it writes into (maxTo).
// It does not wrap ErrCorrupt: the patch may be sound, just not for this slot.
var ErrTooLarge = errors.New("delta patch makes an image larger than the slot")

// patcherBufSize is the size of the Patcher's two buffers (decompressed
// patch bytes, and the from bytes they are added to): one flash sector.
const patcherBufSize = 4 << 10

// patcherWindowBits is the largest heatshrink window a Patcher accepts:
// detools' default, the only one its device decoder takes. It bounds the
// Patcher's memory and keeps a checkpoint well under 1 KiB.
const patcherWindowBits = 8

// Patcher applies a sequential patch pushed to it in pieces, as a device
// does while the patch downloads: it reads the from image (the running slot)
// through an io.ReaderAt, only reading, and writes the to image into the
// other slot at increasing offsets through an io.WriterAt.
//
// Every target byte a Write makes is written before Write returns, and the
// Patcher's whole state (header, chunk parser, decompressor window,
// offsets) can be saved with Checkpoint at any point between calls. After a
// power cut, ResumePatcher rebuilds the Patcher from the last checkpoint and
// the caller pushes the patch again from the byte that followed it; the
// target bytes written after the checkpoint are simply written again.
//
// It refuses what Apply refuses, with errors wrapping ErrCorrupt, and also a
// patch whose to image exceeds maxTo (ErrTooLarge) and a heatshrink stream
// with a window over 2^8 bytes (unsupported, as on detools' devices). After
// an error every call returns it; what was written must be discarded or the
// patch resumed from an earlier checkpoint.
//
// Memory: two 4 KiB buffers, the heatshrink window (256 bytes) and a few
// counters, whatever the image size: under 9 KiB in all. A checkpoint is
// at most MaxCheckpointSize (340) bytes.
// No goroutines. A Patcher is not safe for concurrent use.
type Patcher struct {
	from     io.ReaderAt
	fromSize int64
	to       io.WriterAt
	maxTo    int64

	hdr    [1 + maxSizeBytes]byte // header bytes while they arrive
	hdrN   int
	toSize int64 // -1 until the header is read
	comp   string
	dec    compress.Decoder // nil for a patch to an empty image

	phase   uint8
	left    int64 // diff or extra bytes of the current chunk still to come
	fromPos int64
	toPos   int64
	chunk   int64
	size    sizeField // the size field being read

	closed bool
	err    error
	buf    []byte // decompressed patch bytes
	fbuf   []byte // from bytes
}

// The Patcher's phases: what it reads next.
const (
	phHeader     = iota // header byte and to size, outside the compressed stream
	phDataFormat        // the data format patch size
	phDiffSize
	phDiff
	phExtraSize
	phExtra
	phAdjust
	phDone
	numPhases
)

// sizeField is a size (see readSize) read a byte at a time.
type sizeField struct {
	mag int64 // magnitude so far
	n   int   // bytes read
	neg bool
}

// push adds one byte, returning the value once the field is complete.
func (s *sizeField) push(b byte) (v int64, done bool, err error) {
	if s.n == 0 {
		s.neg = b&0x40 != 0
		s.mag = int64(b & 0x3f)
	} else {
		s.mag |= int64(b&0x7f) << (6 + 7*(s.n-1))
	}
	s.n++
	if b&0x80 != 0 {
		if s.n == maxSizeBytes {
			return 0, false, corruptf("size field longer than %d bytes (limit %d)", maxSizeBytes, MaxSize)
		}
		return 0, false, nil
	}
	v = s.mag
	if s.neg {
		v = -v
	}
	*s = sizeField{}
	return v, true, nil
}

// NewPatcher returns a Patcher that makes its target from from (fromSize
// bytes) into to, at offsets 0 up to at most maxTo.
func NewPatcher(from io.ReaderAt, fromSize int64, to io.WriterAt, maxTo int64) *Patcher {
	p := &Patcher{from: from, fromSize: fromSize, to: to, maxTo: maxTo, toSize: -1,
		buf: make([]byte, patcherBufSize), fbuf: make([]byte, patcherBufSize)}
	if fromSize < 0 || maxTo < 0 {
		p.err = fmt.Errorf("delta: patcher made with a negative size (from %d, slot %d)", fromSize, maxTo)
	}
	return p
}

// Written returns the target bytes written so far.
func (p *Patcher) Written() int64 { return p.toPos }

// ToSize returns the target size the header declares, or -1 until the
// header was read.
func (p *Patcher) ToSize() int64 { return p.toSize }

func (p *Patcher) fail(err error) error {
	p.err = err
	return err
}

// Write pushes the next bytes of the patch. It consumes all of b or returns
// an error; every target byte they make is written to to before it returns.
// Bytes after the patch's end are refused (for crle, only once they are
// known to be more than empty segments, which Apply also accepts).
func (p *Patcher) Write(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if p.closed {
		return 0, p.fail(errors.New("delta: write to a closed patcher"))
	}
	n := 0
	for ; p.phase == phHeader && n < len(b); n++ {
		if err := p.headerByte(b[n]); err != nil {
			return n, p.fail(err)
		}
	}
	rest := b[n:]
	if p.dec == nil {
		if len(rest) > 0 {
			return n, p.fail(corruptf("data follows the header of a patch to an empty image"))
		}
		return len(b), nil
	}
	for {
		nd, ns, err := p.dec.Decode(p.buf, rest)
		rest = rest[ns:]
		n += ns
		if nd > 0 {
			if err := p.consume(p.buf[:nd]); err != nil {
				return n, p.fail(err)
			}
		}
		if err != nil {
			return n, p.fail(p.decodeError(err))
		}
		if nd == 0 && ns == 0 {
			break
		}
	}
	if len(rest) > 0 {
		// A Decoder uses all its input while it has room for output.
		return n, p.fail(fmt.Errorf("delta: %s decoder stopped with %d input bytes left", p.comp, len(rest)))
	}
	// No more heatshrink input can end a finished patch cleanly: every
	// further byte either makes output or leaves an operation unfinished.
	// (A crle stream may still get empty segments, which Apply accepts.)
	if p.phase == phDone && p.comp == "heatshrink" {
		if err := p.dec.End(); err != nil {
			return n, p.fail(fmt.Errorf("%w: after the last chunk: %w", ErrCorrupt, err))
		}
	}
	return len(b), nil
}

func (p *Patcher) decodeError(err error) error {
	if errors.Is(err, compress.ErrWindowTooLarge) {
		return fmt.Errorf("cannot apply this patch: %w", err)
	}
	return fmt.Errorf("%w: %s stream (chunk %d, to offset %d): %w", ErrCorrupt, p.comp, p.chunk, p.toPos, err)
}

// headerByte takes one byte of the header, which is not compressed, and
// reads the header once its to size is complete.
func (p *Patcher) headerByte(b byte) error {
	p.hdr[p.hdrN] = b
	p.hdrN++
	if p.hdrN < 2 || b&0x80 != 0 && p.hdrN < len(p.hdr) {
		return nil
	}
	info, err := readHeader(&sliceReader{b: p.hdr[:p.hdrN]})
	if err != nil {
		return err
	}
	return p.startStream(info.ToSize, info.Compression)
}

// startStream sets the Patcher up for the stream after a header.
func (p *Patcher) startStream(toSize int64, comp string) error {
	if toSize > p.maxTo {
		return fmt.Errorf("%w: the patch makes %d bytes, the slot holds %d", ErrTooLarge, toSize, p.maxTo)
	}
	p.toSize, p.comp = toSize, comp
	p.hdrN = 0
	if toSize == 0 {
		// detools writes no stream at all for an empty image.
		p.phase = phDone
		return nil
	}
	dec, err := newPatchDecoder(comp)
	if err != nil {
		return err
	}
	p.dec = dec
	p.phase = phDataFormat
	return nil
}

func newPatchDecoder(comp string) (compress.Decoder, error) {
	if _, err := lookupCodec(comp); err != nil {
		return nil, fmt.Errorf("cannot apply this patch: %w", err)
	}
	if comp == "heatshrink" {
		return compress.NewHeatshrinkDecoder(patcherWindowBits)
	}
	return compress.NewDecoder(comp)
}

// consume parses decompressed bytes, writing the target bytes they make.
func (p *Patcher) consume(d []byte) error {
	for len(d) > 0 {
		switch p.phase {
		case phDiff, phExtra:
			k := int(min(p.left, int64(len(d))))
			if err := p.data(d[:k]); err != nil {
				return fmt.Errorf("chunk %d (to offset %d): %w", p.chunk, p.toPos, err)
			}
			d = d[k:]
			if p.left -= int64(k); p.left == 0 {
				p.phase++
			}
		case phDone:
			return corruptf("data after the last chunk")
		default:
			v, done, err := p.size.push(d[0])
			d = d[1:]
			if err == nil && done {
				err = p.sizeDone(v)
			}
			if err != nil {
				if p.phase == phDataFormat {
					return fmt.Errorf("reading the data format patch size: %w", err)
				}
				return fmt.Errorf("chunk %d (to offset %d): %w", p.chunk, p.toPos, err)
			}
		}
	}
	return nil
}

// sizeDone checks a complete size field and moves to the next phase,
// refusing what Apply refuses.
func (p *Patcher) sizeDone(v int64) error {
	switch p.phase {
	case phDataFormat:
		if v != 0 {
			return corruptf("data format patch of %d bytes: not supported (create the patch without --data-format)", v)
		}
		p.phase = phDiffSize
	case phDiffSize, phExtraSize:
		what := kind(p.phase == phDiffSize)
		if v < 0 {
			return corruptf("negative %s size %d", what, v)
		}
		if v > p.toSize-p.toPos {
			return corruptf("%s of %d bytes would write past the to size %d", what, v, p.toSize)
		}
		if p.phase == phDiffSize && v > p.fromSize-p.fromPos {
			return corruptf("diff of %d bytes at from offset %d reads past the end of from (%d bytes): is this patch for another from image?", v, p.fromPos, p.fromSize)
		}
		p.left = v
		p.phase++
		if v == 0 {
			p.phase++
		}
	case phAdjust:
		next := p.fromPos + v
		if next < 0 || next > p.fromSize {
			return corruptf("adjustment %d moves the from offset to %d, outside from (%d bytes)", v, next, p.fromSize)
		}
		p.fromPos = next
		p.chunk++
		p.phase = phDiffSize
		if p.toPos == p.toSize {
			p.phase = phDone
		}
	}
	return nil
}

// data writes diff bytes (added to from's) or extra bytes at the to offset.
func (p *Patcher) data(d []byte) error {
	if p.phase == phDiff {
		f := p.fbuf[:len(d)]
		got, err := p.from.ReadAt(f, p.fromPos)
		if got < len(f) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("reading from at offset %d: %w", p.fromPos, err)
		}
		for i := range d {
			d[i] += f[i]
		}
		p.fromPos += int64(len(d))
	}
	got, err := p.to.WriteAt(d, p.toPos)
	if got < len(d) {
		if err == nil {
			err = io.ErrShortWrite
		}
		return fmt.Errorf("writing the to image at offset %d: %w", p.toPos, err)
	}
	p.toPos += int64(len(d))
	return nil
}

// Close says the patch has ended. It returns an error wrapping ErrCorrupt
// if the patch is truncated or its stream does not end cleanly.
func (p *Patcher) Close() error {
	if p.err != nil || p.closed {
		return p.err
	}
	switch {
	case p.phase == phHeader:
		// readHeader says what is wrong with the bytes so far.
		_, err := readHeader(&sliceReader{b: p.hdr[:p.hdrN]})
		return p.fail(err)
	case p.phase != phDone:
		return p.fail(corruptf("patch is truncated in chunk %d: %d of %d to bytes written", p.chunk, p.toPos, p.toSize))
	case p.dec != nil:
		if err := p.dec.End(); err != nil {
			return p.fail(fmt.Errorf("%w: after the last chunk: %w", ErrCorrupt, err))
		}
	}
	p.closed = true
	return nil
}

// checkpointVersion is the first byte of a checkpoint. A checkpoint is:
//
//	version, then unsigned varints: from size, phase, and
//	  phHeader: the header bytes so far (count byte, bytes)
//	  else:     compression id, to size, to offset, from offset, data left,
//	            chunk, size field (magnitude, bytes read, sign), and for a
//	            non-empty image the decoder state (length, bytes)
//	CRC-32 (IEEE) of all the above, little endian
const checkpointVersion = 1

// MaxCheckpointSize bounds the length of a checkpoint: with every field at
// its largest it is 326 bytes (TestCheckpointSizeBound), 256 of them the
// heatshrink window.
const MaxCheckpointSize = 340

// maxChunks bounds the chunk counter in a checkpoint (it is only used in
// messages; each chunk but the last makes at least one byte, or reads its
// adjustment's bytes, so this is generous).
const maxChunks = 1 << 40

// Checkpoint returns the Patcher's whole state, to be stored with the count
// of patch bytes pushed so far and handed to ResumePatcher after a restart.
// It fails after an error.
func (p *Patcher) Checkpoint() ([]byte, error) {
	if p.err != nil {
		return nil, fmt.Errorf("delta: no checkpoint after an error: %w", p.err)
	}
	b := make([]byte, 0, 64+256)
	b = append(b, checkpointVersion)
	b = binary.AppendUvarint(b, uint64(p.fromSize))
	b = append(b, p.phase)
	if p.phase == phHeader {
		b = append(b, byte(p.hdrN))
		b = append(b, p.hdr[:p.hdrN]...)
	} else {
		b = append(b, byte(compressionIDs[p.comp]))
		for _, v := range []int64{p.toSize, p.toPos, p.fromPos, p.left, p.chunk, p.size.mag, int64(p.size.n)} {
			b = binary.AppendUvarint(b, uint64(v))
		}
		b = append(b, boolByte(p.size.neg))
		if p.dec != nil {
			ds, err := p.dec.AppendBinary(nil)
			if err != nil {
				return nil, fmt.Errorf("delta: saving the decoder: %w", err)
			}
			b = binary.AppendUvarint(b, uint64(len(ds)))
			b = append(b, ds...)
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b)), nil
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// ErrCheckpoint is wrapped by ResumePatcher's errors for a checkpoint that
// is damaged, of another version, or taken against another from or slot.
// The caller starts the patch over from its first byte.
var ErrCheckpoint = errors.New("delta: invalid patcher checkpoint")

// ResumePatcher rebuilds the Patcher whose Checkpoint gave state, with new
// from and to for the same images. It checks every field (a checksum, then
// each against from's size, maxTo and the others) and refuses a state that
// fails with an error wrapping ErrCheckpoint.
func ResumePatcher(from io.ReaderAt, fromSize int64, to io.WriterAt, maxTo int64, state []byte) (*Patcher, error) {
	p := NewPatcher(from, fromSize, to, maxTo)
	if p.err != nil {
		return nil, p.err
	}
	if err := p.restore(state); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	return p, nil
}

func (p *Patcher) restore(state []byte) error {
	if len(state) < 5 || len(state) > MaxCheckpointSize {
		return fmt.Errorf("%d bytes, want 5 to %d", len(state), MaxCheckpointSize)
	}
	body, sum := state[:len(state)-4], binary.LittleEndian.Uint32(state[len(state)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return errors.New("checksum mismatch: the checkpoint is damaged")
	}
	if body[0] != checkpointVersion {
		return fmt.Errorf("version %d, this build reads version %d", body[0], checkpointVersion)
	}
	s := compress.NewStateReader(body[1:])
	if fs := s.Uint("from size", 1<<62); !s.Failed() && int64(fs) != p.fromSize {
		return fmt.Errorf("taken with a from image of %d bytes, resumed with %d", fs, p.fromSize)
	}
	p.phase = s.Byte()
	if !s.Failed() && p.phase >= numPhases {
		return fmt.Errorf("unknown phase %d", p.phase)
	}
	if p.phase == phHeader {
		p.hdrN = int(s.Byte())
		if p.hdrN >= len(p.hdr) {
			return fmt.Errorf("%d header bytes", p.hdrN)
		}
		copy(p.hdr[:], s.Bytes(p.hdrN))
		// The header was not complete: its to size still continues.
		for i := 1; i < p.hdrN; i++ {
			if p.hdr[i]&0x80 == 0 {
				return errors.New("a complete header in the header phase")
			}
		}
		return s.Done()
	}
	id := s.Byte()
	comp, ok := compressionName(int(id))
	if !s.Failed() && !ok {
		return fmt.Errorf("unknown compression %d", id)
	}
	toSize := int64(s.Uint("to size", MaxSize))
	p.toPos = int64(s.Uint("to offset", uint64(toSize)))
	p.fromPos = int64(s.Uint("from offset", uint64(p.fromSize)))
	p.left = int64(s.Uint("data left", uint64(toSize-p.toPos)))
	p.chunk = int64(s.Uint("chunk", maxChunks))
	p.size.mag = int64(s.Uint("size field", MaxSize))
	p.size.n = int(s.Uint("size field length", maxSizeBytes-1))
	p.size.neg = s.Byte() != 0
	if s.Failed() {
		return s.Done()
	}
	phase := p.phase
	if err := p.startStream(toSize, comp); err != nil {
		return err
	}
	p.phase = phase // startStream set up a fresh stream
	if err := p.checkPositions(); err != nil {
		return err
	}
	if p.dec == nil {
		if phase != phDone {
			return fmt.Errorf("phase %d for an empty image", phase)
		}
		return s.Done()
	}
	n := int(s.Uint("decoder state length", 1<<10))
	ds := s.Bytes(n)
	if s.Failed() {
		return s.Done()
	}
	if err := p.dec.UnmarshalBinary(ds); err != nil {
		return err
	}
	return s.Done()
}

// checkPositions checks that the restored offsets and counters are ones the
// phase can have: after it, no read leaves from and no write leaves
// [0, to size).
func (p *Patcher) checkPositions() error {
	ok := true
	switch p.phase {
	case phDone:
		ok = p.toPos == p.toSize
	case phDataFormat:
		ok = p.toPos == 0 && p.fromPos == 0 && p.chunk == 0
	case phDiffSize:
		ok = p.toPos < p.toSize
	}
	if !ok {
		return fmt.Errorf("phase %d at to offset %d of %d, from offset %d, chunk %d", p.phase, p.toPos, p.toSize, p.fromPos, p.chunk)
	}
	switch p.phase {
	case phDiff:
		ok = p.left > 0 && p.left <= p.fromSize-p.fromPos
	case phExtra:
		ok = p.left > 0
	default:
		ok = p.left == 0
	}
	if !ok {
		return fmt.Errorf("%d data bytes left in phase %d (from offset %d of %d)", p.left, p.phase, p.fromPos, p.fromSize)
	}
	sz := p.size
	inSize := p.phase == phDataFormat || p.phase == phDiffSize || p.phase == phExtraSize || p.phase == phAdjust
	if sz.n == 0 && (sz.mag != 0 || sz.neg) || sz.n > 0 && (!inSize || sz.mag >= 1<<(6+7*(sz.n-1))) {
		return fmt.Errorf("partial size field (%d bytes, %d) out of range in phase %d", sz.n, sz.mag, p.phase)
	}
	return nil
}
