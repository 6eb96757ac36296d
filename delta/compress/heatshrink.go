package compress

import (
	"encoding/binary"
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

// ErrWindowTooLarge is wrapped by the error for a heatshrink stream whose
// window exceeds the limit given to NewHeatshrinkDecoder: a valid stream this
// decoder will not hold.
var ErrWindowTooLarge = errors.New("compress: heatshrink: window larger than this decoder allows")

// Where a HeatshrinkDecoder is inside an operation: the field it reads next.
const (
	hsTag = iota
	hsLiteral
	hsDistance
	hsLength
)

// HeatshrinkDecoder is the push-based heatshrink Decoder. It holds the
// window (2^window bytes, 256 for detools' streams) and a few counters; its
// saved state is the window plus at most 30 bytes.
type HeatshrinkDecoder struct {
	maxWindow uint // limit on the stream's window; configuration, not state

	started  bool
	wbits    uint
	lbits    uint
	window   []byte // ring; len is 1 << wbits
	head     int    // next write position in window
	phase    uint8
	dist     int    // distance field of the copy being read
	copyLeft int    // bytes of the current copy still to produce
	copyDist int    // its distance back
	bits     uint32 // input bits loaded and not used, right-aligned
	nbits    uint
	// End must tell the zero padding after the last operation from a
	// truncated one: the stream ends cleanly if the operation under way has
	// loaded no byte of its own and the bits it started with were all zero.
	loadedOp  bool
	opZero    bool
	outOffset int64 // bytes produced, for error messages
	err       error
}

// NewHeatshrinkDecoder returns a heatshrink Decoder that refuses streams
// whose window is larger than 2^maxWindow bytes (4..15; detools' streams
// use 8), bounding its memory and saved state.
func NewHeatshrinkDecoder(maxWindow int) (*HeatshrinkDecoder, error) {
	if maxWindow < minWindowBits || maxWindow > maxWindowBits {
		return nil, fmt.Errorf("compress: heatshrink: window limit %d outside %d..%d", maxWindow, minWindowBits, maxWindowBits)
	}
	return &HeatshrinkDecoder{maxWindow: uint(maxWindow)}, nil
}

// start reads detools' header byte and allocates the window.
func (h *HeatshrinkDecoder) start(b byte) error {
	window, lookahead := int(b>>4)+4, int(b&0x0f)+3
	if err := checkHeatshrinkParams(window, lookahead); err != nil {
		return err
	}
	if uint(window) > h.maxWindow {
		return fmt.Errorf("%w: window_sz2 %d, limit %d (detools writes 8)", ErrWindowTooLarge, window, h.maxWindow)
	}
	h.wbits, h.lbits = uint(window), uint(lookahead)
	h.window = make([]byte, 1<<window)
	h.started = true
	h.beginOp()
	return nil
}

func (h *HeatshrinkDecoder) beginOp() {
	h.loadedOp, h.opZero = false, h.bits == 0
}

// Decode implements Decoder. The bit buffer lives in locals while it runs:
// this loop is most of the time a device spends applying a patch.
func (h *HeatshrinkDecoder) Decode(dst, src []byte) (nDst, nSrc int, err error) {
	if h.err != nil {
		return 0, 0, h.err
	}
	if !h.started {
		if len(src) == 0 {
			return 0, 0, nil
		}
		nSrc = 1
		if err := h.start(src[0]); err != nil {
			h.err = err
			return 0, nSrc, err
		}
	}
	mask := len(h.window) - 1
	bits, nbits, loaded := h.bits, h.nbits, h.loadedOp
	// Each field loads whole bytes until it has its n bits; when src runs
	// out first the loaded bits stay held and the field is read again on
	// the next call.
loop:
	for nDst < len(dst) {
		if h.copyLeft > 0 {
			k := min(h.copyLeft, len(dst)-nDst)
			out := dst[nDst : nDst+k]
			head, from := h.head, h.head-h.copyDist
			for j := range out {
				c := h.window[(from+j)&mask]
				h.window[(head+j)&mask] = c
				out[j] = c
			}
			h.head = (head + k) & mask
			nDst += k
			h.copyLeft -= k
			continue
		}
		var n uint
		switch h.phase {
		case hsTag:
			n = 1
		case hsLiteral:
			n = 8
		case hsDistance:
			n = h.wbits
		default:
			n = h.lbits
		}
		for nbits < n {
			if nSrc == len(src) {
				break loop
			}
			bits = bits<<8 | uint32(src[nSrc])
			nSrc++
			nbits += 8
			loaded = true
		}
		nbits -= n
		v := bits >> nbits & (1<<n - 1)
		bits &= 1<<nbits - 1
		switch h.phase {
		case hsTag:
			h.phase = hsDistance
			if v == 1 {
				h.phase = hsLiteral
			}
		case hsLiteral:
			c := byte(v)
			h.window[h.head] = c
			h.head = (h.head + 1) & mask
			dst[nDst] = c
			nDst++
			h.phase = hsTag
			loaded, h.opZero = false, bits == 0
		case hsDistance:
			h.dist = int(v)
			h.phase = hsLength
		default:
			h.copyDist, h.copyLeft = h.dist+1, int(v)+1
			h.dist = 0
			h.phase = hsTag
			// The bits left do not change while the copy is produced.
			loaded, h.opZero = false, bits == 0
		}
	}
	h.bits, h.nbits, h.loadedOp = bits, nbits, loaded
	h.outOffset += int64(nDst)
	return nDst, nSrc, nil
}

// End implements Decoder.
func (h *HeatshrinkDecoder) End() error {
	switch {
	case h.err != nil:
		return h.err
	case !h.started:
		return fmt.Errorf("%w: no header byte: %w", errHSTruncated, io.ErrUnexpectedEOF)
	case h.copyLeft > 0:
		return fmt.Errorf("compress: heatshrink: ended with %d bytes of output not taken", h.copyLeft)
	case h.loadedOp || !h.opZero:
		return fmt.Errorf("%w after %d output bytes: %w", errHSTruncated, h.outOffset, io.ErrUnexpectedEOF)
	}
	return nil
}

// AppendBinary implements Decoder: a tag, flags, the stream's header byte,
// the fields as varints, then the window.
func (h *HeatshrinkDecoder) AppendBinary(b []byte) ([]byte, error) {
	if h.err != nil {
		return b, fmt.Errorf("compress: heatshrink: no state to save after an error: %w", h.err)
	}
	b = append(b, stateHeatshrink, boolByte(h.started)|boolByte(h.loadedOp)<<1|boolByte(h.opZero)<<2)
	if !h.started {
		return b, nil
	}
	b = append(b, byte(h.wbits-4)<<4|byte(h.lbits-3), h.phase, byte(h.nbits))
	for _, v := range []uint64{uint64(h.bits), uint64(h.head), uint64(h.dist), uint64(h.copyLeft), uint64(h.copyDist), uint64(h.outOffset)} {
		b = binary.AppendUvarint(b, v)
	}
	return append(b, h.window...), nil
}

// UnmarshalBinary implements Decoder. It checks every field against the
// stream's parameters and this decoder's window limit.
func (h *HeatshrinkDecoder) UnmarshalBinary(state []byte) error {
	s := NewStateReader(state)
	s.Check(s.Byte() == stateHeatshrink, "not the state of a heatshrink decoder")
	flags := s.Byte()
	s.Check(flags&^7 == 0, "unknown flags")
	n := HeatshrinkDecoder{maxWindow: h.maxWindow, started: flags&1 != 0, loadedOp: flags&2 != 0, opZero: flags&4 != 0}
	if n.started && s.err == nil {
		hdr := s.Byte()
		window, lookahead := int(hdr>>4)+4, int(hdr&0x0f)+3
		if checkHeatshrinkParams(window, lookahead) != nil || uint(window) > n.maxWindow {
			s.Fail(fmt.Sprintf("window_sz2 %d, lookahead_sz2 %d not allowed (window limit %d)", window, lookahead, n.maxWindow))
		} else {
			n.wbits, n.lbits = uint(window), uint(lookahead)
		}
		n.phase = s.Byte()
		s.Check(n.phase <= hsLength, "unknown phase")
		n.nbits = uint(s.Byte())
		// Between calls fewer bits are held than the next field needs.
		s.Check(n.nbits < max(n.wbits, 8), "too many bits held")
		n.bits = uint32(s.Uint("bits", 1<<n.nbits-1))
		size := uint64(1) << n.wbits
		n.head = int(s.Uint("head", size-1))
		n.dist = int(s.Uint("distance", size-1))
		n.copyLeft = int(s.Uint("copy length", 1<<n.lbits))
		n.copyDist = int(s.Uint("copy distance", size))
		s.Check(n.copyLeft == 0 || n.copyDist > 0, "copy without a distance")
		n.outOffset = int64(s.Uint("output offset", 1<<62))
		if s.err == nil {
			n.window = append([]byte(nil), s.Bytes(int(size))...)
		}
	}
	if err := s.Done(); err != nil {
		return fmt.Errorf("heatshrink: %w", err)
	}
	*h = n
	return nil
}

// heatshrinkReader is the pull-based reader over a HeatshrinkDecoder.
type heatshrinkReader struct {
	*HeatshrinkDecoder
	*decoderReader
}

func newHeatshrinkReader(r io.Reader) *heatshrinkReader {
	d := &HeatshrinkDecoder{maxWindow: maxWindowBits}
	return &heatshrinkReader{d, newDecoderReader(d, r)}
}

func (h *heatshrinkReader) Read(p []byte) (int, error) { return h.decoderReader.Read(p) }
