package compress

import (
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

// crleReader holds only the state of the current segment.
type crleReader struct {
	r      io.ByteReader
	kind   byte
	left   uint64 // bytes of the current segment still to produce
	value  byte   // repeated value
	err    error
	offset int64 // compressed bytes consumed, for error messages
}

func newCRLEReader(r io.Reader) *crleReader { return &crleReader{r: byteReader(r)} }

func (c *crleReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && c.err == nil {
		if c.left == 0 {
			c.err = c.nextSegment()
			continue
		}
		k := uint64(len(p) - n)
		if k > c.left {
			k = c.left
		}
		if c.kind == crleRepeated {
			for i := range int(k) {
				p[n+i] = c.value
			}
		} else {
			for i := range int(k) {
				b, err := c.readByte()
				if err != nil {
					c.err = c.truncated(err, "scattered data")
					k = uint64(i)
					break
				}
				p[n+i] = b
			}
		}
		n += int(k)
		c.left -= k
	}
	if n > 0 {
		return n, nil
	}
	return 0, c.err
}

// nextSegment reads a segment header; io.EOF before a kind byte is the clean
// end of the stream.
func (c *crleReader) nextSegment() error {
	kind, err := c.readByte()
	if err == io.EOF {
		return io.EOF
	}
	if err != nil {
		return fmt.Errorf("compress: crle: reading segment kind: %w", err)
	}
	if kind != crleScattered && kind != crleRepeated {
		return fmt.Errorf("%w: 0x%02x at offset %d", errCRLEKind, kind, c.offset-1)
	}
	size, err := c.readUvarint()
	if err != nil {
		return err
	}
	c.kind, c.left = kind, size
	if kind == crleRepeated {
		v, err := c.readByte()
		if err != nil {
			return c.truncated(err, "repeated value")
		}
		c.value = v
	}
	return nil
}

func (c *crleReader) readUvarint() (uint64, error) {
	var v uint64
	for i := range crleMaxVarintBytes {
		b, err := c.readByte()
		if err != nil {
			return 0, c.truncated(err, "segment size")
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w (at offset %d)", errCRLEOverflow, c.offset)
}

func (c *crleReader) readByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.offset++
	}
	return b, err
}

func (c *crleReader) truncated(err error, what string) error {
	if err == io.EOF {
		return fmt.Errorf("compress: crle: stream truncated in %s at offset %d: %w", what, c.offset, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("compress: crle: reading %s: %w", what, err)
}
