package compress

import (
	"errors"
	"fmt"
	"io"
)

// heatshrink is an LZSS bitstream, written most significant bit first:
//
//	1 byte[8]                              literal
//	0 (distance-1)[window] (length-1)[lookahead]   copy from distance bytes back
//
// The last byte is padded with zero bits. Encoder and decoder both start with
// a window of zeros, so a copy may reach up to 2^window bytes before the
// start of the output and then yields zeros; the C encoder does emit such
// copies (for an image that starts with zeros), so they are valid input.
//
// detools puts one header byte in front: (window-4)<<4 | (lookahead-3).
const (
	// detools' defaults (--heatshrink-window-sz2, --heatshrink-lookahead-sz2),
	// which are also the only values its statically allocated C decoder,
	// the one on devices, accepts.
	defaultWindowBits    = 8
	defaultLookaheadBits = 7

	// The heatshrink library's limits (heatshrink_common.h).
	minWindowBits    = 4
	maxWindowBits    = 15
	minLookaheadBits = 3
)

var (
	// errHSTruncated is wrapped by read errors for a stream that ends inside
	// an operation or with more than zero padding after the last one.
	errHSTruncated = errors.New("compress: heatshrink: stream truncated")
	errHSHeader    = errors.New("compress: heatshrink: bad header")
)

func checkHeatshrinkParams(window, lookahead int) error {
	if window < minWindowBits || window > maxWindowBits || lookahead < minLookaheadBits || lookahead >= window {
		return fmt.Errorf("%w: window_sz2 %d, lookahead_sz2 %d (want %d <= lookahead < window <= %d, lookahead >= %d)",
			errHSHeader, window, lookahead, minWindowBits, maxWindowBits, minLookaheadBits)
	}
	return nil
}

// heatshrinkReader keeps the window (2^window bytes) and a bit buffer.
type heatshrinkReader struct {
	r         io.ByteReader
	window    []byte // ring; len is a power of two
	mask      int
	head      int // next write position in window
	wbits     uint
	lbits     uint
	started   bool
	copyLeft  int // bytes of the current copy still to produce
	copyDist  int
	bits      uint32 // unread bits, right-aligned
	nbits     uint
	loadedOp  bool // whether the current operation needed a new byte
	opZero    bool // whether the bits left when it began were all zero
	err       error
	outOffset int64
}

func newHeatshrinkReader(r io.Reader) *heatshrinkReader {
	return &heatshrinkReader{r: byteReader(r)}
}

func (h *heatshrinkReader) start() error {
	b, err := h.r.ReadByte()
	if err == io.EOF {
		return fmt.Errorf("%w: no header byte: %w", errHSTruncated, io.ErrUnexpectedEOF)
	}
	if err != nil {
		return fmt.Errorf("compress: heatshrink: reading header: %w", err)
	}
	window, lookahead := int(b>>4)+4, int(b&0x0f)+3
	if err := checkHeatshrinkParams(window, lookahead); err != nil {
		return err
	}
	h.wbits, h.lbits = uint(window), uint(lookahead)
	h.window = make([]byte, 1<<window)
	h.mask = len(h.window) - 1
	h.started = true
	return nil
}

// getBits returns the next n (<= 16) bits. At the end of the input it
// tells a clean end (only zero padding left before this operation) from a
// truncated one.
func (h *heatshrinkReader) getBits(n uint) (uint32, error) {
	for h.nbits < n {
		b, err := h.r.ReadByte()
		if err == io.EOF {
			if !h.loadedOp && h.opZero {
				return 0, io.EOF
			}
			return 0, fmt.Errorf("%w after %d output bytes: %w", errHSTruncated, h.outOffset, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return 0, fmt.Errorf("compress: heatshrink: %w", err)
		}
		h.bits = h.bits<<8 | uint32(b)
		h.nbits += 8
		h.loadedOp = true
	}
	h.nbits -= n
	v := h.bits >> h.nbits & (1<<n - 1)
	h.bits &= 1<<h.nbits - 1
	return v, nil
}

func (h *heatshrinkReader) Read(p []byte) (int, error) {
	if h.err == nil && !h.started {
		h.err = h.start()
	}
	n := 0
	for n < len(p) && h.err == nil {
		if h.copyLeft > 0 {
			for n < len(p) && h.copyLeft > 0 {
				c := h.window[(h.head-h.copyDist)&h.mask]
				h.window[h.head] = c
				h.head = (h.head + 1) & h.mask
				p[n] = c
				n++
				h.copyLeft--
			}
			continue
		}
		h.loadedOp, h.opZero = false, h.bits == 0
		tag, err := h.getBits(1)
		if err != nil {
			h.err = err
			break
		}
		if tag == 1 {
			v, err := h.getBits(8)
			if err != nil {
				h.err = err
				break
			}
			c := byte(v)
			h.window[h.head] = c
			h.head = (h.head + 1) & h.mask
			p[n] = c
			n++
			continue
		}
		dist, err := h.getBits(h.wbits)
		if err != nil {
			h.err = err
			break
		}
		length, err := h.getBits(h.lbits)
		if err != nil {
			h.err = err
			break
		}
		h.copyDist, h.copyLeft = int(dist)+1, int(length)+1
	}
	h.outOffset += int64(n)
	if n > 0 {
		return n, nil
	}
	return 0, h.err
}
