package compress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// crle ("conditional run-length encoding") is detools' own format: a series
// of segments, each a kind byte and an unsigned LEB128 varint:
//
//	0x00 size  data[size]     scattered: size bytes copied as they are
//	0x01 count value          repeated:  value repeated count times
//
// detools' encoder turns every run of at least crleMinRun equal bytes into one
// repeated segment and everything between such runs into one scattered
// segment; an empty input is the single segment 00 00.
const (
	crleScattered = 0x00
	crleRepeated  = 0x01
	crleMinRun    = 6
	// crleMaxVarintBytes bounds a size: detools' encoder refuses values of
	// 2^63 and more, which take 9 bytes of 7 bits.
	crleMaxVarintBytes = 9
)

var (
	errCRLEKind     = errors.New("compress: crle: segment kind is neither scattered (0) nor repeated (1)")
	errCRLEOverflow = errors.New("compress: crle: size does not fit in 63 bits")
)

// crleWriter buffers the current run and the scattered bytes before it:
// a scattered segment starts with its size, so it can only be written once
// the next long run (or the end) is seen. That buffer is unbounded, as in
// detools; this is the encoder, which runs on the server.
type crleWriter struct {
	w       io.Writer
	pending []byte // scattered bytes not yet written
	run     byte   // value of the current run
	runLen  uint64 // length of the current run; 0 before the first byte
	wrote   bool   // whether any segment was written
	out     []byte
	closed  bool
}

func newCRLEWriter(w io.Writer) *crleWriter { return &crleWriter{w: w} }

func (c *crleWriter) Write(p []byte) (int, error) {
	if c.closed {
		return 0, errors.New("compress: crle: write after close")
	}
	for _, b := range p {
		if c.runLen > 0 && b == c.run {
			c.runLen++
			continue
		}
		c.endRun()
		c.run, c.runLen = b, 1
	}
	if len(c.out) >= 32<<10 {
		return len(p), c.flushOut()
	}
	return len(p), nil
}

// endRun moves the current run into a repeated segment if it is long
// enough, or into the pending scattered bytes.
func (c *crleWriter) endRun() {
	if c.runLen >= crleMinRun {
		c.emitScattered()
		c.out = append(c.out, crleRepeated)
		c.out = appendUvarint(c.out, c.runLen)
		c.out = append(c.out, c.run)
		c.wrote = true
	} else {
		for i := uint64(0); i < c.runLen; i++ {
			c.pending = append(c.pending, c.run)
		}
	}
	c.runLen = 0
}

func (c *crleWriter) emitScattered() {
	if len(c.pending) == 0 {
		return
	}
	c.out = append(c.out, crleScattered)
	c.out = appendUvarint(c.out, uint64(len(c.pending)))
	c.out = append(c.out, c.pending...)
	c.pending = c.pending[:0]
	c.wrote = true
}

func (c *crleWriter) flushOut() error {
	if len(c.out) == 0 {
		return nil
	}
	_, err := c.w.Write(c.out)
	c.out = c.out[:0]
	if err != nil {
		return fmt.Errorf("compress: crle: %w", err)
	}
	return nil
}

func (c *crleWriter) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	c.endRun()
	c.emitScattered()
	if !c.wrote {
		// detools marks an empty input with an empty scattered segment.
		c.out = append(c.out, crleScattered, 0)
	}
	return c.flushOut()
}

// appendUvarint appends v in detools' size encoding: 7 bits at a time,
// least significant first, high bit set on all but the last byte.
func appendUvarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// Where a CRLEDecoder is: the part of a segment it reads next.
const (
	crleKind = iota
	crleSize
	crleValue
	crleData
)

// CRLEDecoder is the push-based crle Decoder. It holds only the current
// segment's header; its saved state is at most 30 bytes.
type CRLEDecoder struct {
	phase  uint8
	kind   byte
	value  byte   // repeated value
	left   uint64 // bytes of the current segment still to produce
	size   uint64 // size varint read so far
	sizeN  int    // its bytes read so far
	offset int64  // compressed bytes consumed, for error messages
	err    error
}

// NewCRLEDecoder returns a crle Decoder.
func NewCRLEDecoder() *CRLEDecoder { return &CRLEDecoder{} }

// Decode implements Decoder.
func (c *CRLEDecoder) Decode(dst, src []byte) (nDst, nSrc int, err error) {
	if c.err != nil {
		return 0, 0, c.err
	}
	defer func() { c.offset += int64(nSrc) }()
	for nDst < len(dst) {
		if c.phase == crleData {
			k := uint64(len(dst) - nDst)
			if c.kind == crleScattered {
				k = min(k, uint64(len(src)-nSrc))
				if k == 0 {
					break
				}
			}
			k = min(k, c.left)
			out := dst[nDst : nDst+int(k)]
			if c.kind == crleScattered {
				copy(out, src[nSrc:])
				nSrc += int(k)
			} else {
				for i := range out {
					out[i] = c.value
				}
			}
			nDst += int(k)
			if c.left -= k; c.left == 0 {
				c.phase = crleKind
			}
			continue
		}
		if nSrc == len(src) {
			break
		}
		b := src[nSrc]
		nSrc++
		switch c.phase {
		case crleKind:
			if b != crleScattered && b != crleRepeated {
				c.err = fmt.Errorf("%w: 0x%02x at offset %d", errCRLEKind, b, c.offset+int64(nSrc)-1)
				return nDst, nSrc, c.err
			}
			c.kind, c.size, c.sizeN, c.phase = b, 0, 0, crleSize
		case crleSize:
			c.size |= uint64(b&0x7f) << (7 * c.sizeN)
			c.sizeN++
			if b&0x80 != 0 {
				if c.sizeN == crleMaxVarintBytes {
					c.err = fmt.Errorf("%w (at offset %d)", errCRLEOverflow, c.offset+int64(nSrc))
					return nDst, nSrc, c.err
				}
				continue
			}
			c.left, c.size, c.sizeN = c.size, 0, 0
			c.phase = crleData
			if c.kind == crleRepeated {
				c.phase = crleValue
			}
			if c.phase == crleData && c.left == 0 {
				c.phase = crleKind
			}
		case crleValue:
			c.value = b
			c.phase = crleData
			if c.left == 0 {
				c.phase = crleKind
			}
		}
	}
	return nDst, nSrc, nil
}

// End implements Decoder: the stream must end between segments.
func (c *CRLEDecoder) End() error {
	if c.err != nil {
		return c.err
	}
	if c.phase == crleKind {
		return nil
	}
	what := map[uint8]string{crleSize: "segment size", crleValue: "repeated value", crleData: "scattered data"}[c.phase]
	if c.phase == crleData && c.kind == crleRepeated {
		return fmt.Errorf("compress: crle: ended with %d bytes of output not taken", c.left)
	}
	return fmt.Errorf("compress: crle: stream truncated in %s at offset %d: %w", what, c.offset, io.ErrUnexpectedEOF)
}

// AppendBinary implements Decoder.
func (c *CRLEDecoder) AppendBinary(b []byte) ([]byte, error) {
	if c.err != nil {
		return b, fmt.Errorf("compress: crle: no state to save after an error: %w", c.err)
	}
	b = append(b, stateCRLE, c.phase, c.kind, c.value, byte(c.sizeN))
	for _, v := range []uint64{c.left, c.size, uint64(c.offset)} {
		b = binary.AppendUvarint(b, v)
	}
	return b, nil
}

// UnmarshalBinary implements Decoder.
func (c *CRLEDecoder) UnmarshalBinary(state []byte) error {
	s := NewStateReader(state)
	s.Check(s.Byte() == stateCRLE, "not the state of a crle decoder")
	n := CRLEDecoder{phase: s.Byte(), kind: s.Byte(), value: s.Byte(), sizeN: int(s.Byte())}
	n.left = s.Uint("segment size", 1<<63-1)
	n.size = s.Uint("partial size", 1<<(7*crleMaxVarintBytes)-1)
	n.offset = int64(s.Uint("offset", 1<<62))
	s.Check(n.phase <= crleData, "unknown phase")
	s.Check(n.phase == crleKind || n.kind == crleScattered || n.kind == crleRepeated, "unknown segment kind")
	s.Check(n.phase == crleSize || n.sizeN == 0 && n.size == 0, "size bytes outside a size")
	s.Check(n.sizeN < crleMaxVarintBytes && n.size < 1<<(7*n.sizeN), "partial size out of range")
	s.Check((n.phase == crleData) == (n.left > 0) || n.phase == crleValue, "segment size does not match the phase")
	if err := s.Done(); err != nil {
		return fmt.Errorf("crle: %w", err)
	}
	*c = n
	return nil
}

// crleReader is the pull-based reader over a CRLEDecoder.
type crleReader struct{ *decoderReader }

func newCRLEReader(r io.Reader) crleReader { return crleReader{newDecoderReader(NewCRLEDecoder(), r)} }
