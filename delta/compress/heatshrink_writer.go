package compress

import (
	"errors"
	"fmt"
	"io"
)

// The encoder makes the same choices as the heatshrink C encoder, so that
// its output is byte for byte the same: greedy parsing; at each position the
// longest match among the 2^window preceding bytes (the stream is preceded
// by 2^window zeros), at most min(2^lookahead, bytes left) long, the nearest
// one on ties, taken only if longer than the break-even point
// (1+window+lookahead)/8 bytes. The C encoder scans the window byte by byte;
// here hash chains over the first bytes of each position find the same
// candidates, nearest first, without that scan.

const (
	hsHashBits = 15
	hsHashSize = 1 << hsHashBits
	// hsBlock is how much input is buffered before searching, beyond the
	// window kept behind the current position.
	hsBlock = 64 << 10
)

type heatshrinkWriter struct {
	w        io.Writer
	wbits    uint
	lbits    uint
	winSize  int
	maxLen   int
	minMatch int // shortest match worth a copy
	hashLen  int // bytes hashed per position (<= minMatch)

	// buf holds virtual positions [base, base+len(buf)): the window before
	// pos and the input not yet encoded. Virtual position winSize is the
	// first input byte; the ones before it are the initial zeros.
	buf      []byte
	base     int
	pos      int // next position to encode
	inserted int // positions below this are in the hash chains
	head     []int32
	prev     []int32 // indexed by position & (winSize-1)

	out    []byte
	acc    uint32 // pending output bits, right-aligned
	nacc   uint
	err    error
	closed bool
}

func newHeatshrinkWriter(w io.Writer, window, lookahead int) (*heatshrinkWriter, error) {
	if err := checkHeatshrinkParams(window, lookahead); err != nil {
		return nil, err
	}
	h := &heatshrinkWriter{
		w:       w,
		wbits:   uint(window),
		lbits:   uint(lookahead),
		winSize: 1 << window,
		maxLen:  1 << lookahead,
		head:    make([]int32, hsHashSize),
		prev:    make([]int32, 1<<window),
	}
	h.minMatch = (1+window+lookahead)/8 + 1
	h.hashLen = min(h.minMatch, 3)
	for i := range h.head {
		h.head[i] = -1
	}
	h.buf = make([]byte, h.winSize, h.winSize+hsBlock)
	h.pos = h.winSize
	h.out = append(h.out, byte((window-minWindowBits)<<4|(lookahead-minLookaheadBits)))
	return h, nil
}

func (h *heatshrinkWriter) Write(p []byte) (int, error) {
	if h.closed {
		return 0, errors.New("compress: heatshrink: write after close")
	}
	if h.err != nil {
		return 0, h.err
	}
	n := len(p)
	for len(p) > 0 {
		room := cap(h.buf) - len(h.buf)
		if room == 0 {
			h.encode(false)
			h.compact()
			if err := h.flushOut(); err != nil {
				return n - len(p), err
			}
			continue
		}
		k := min(room, len(p))
		h.buf = append(h.buf, p[:k]...)
		p = p[k:]
	}
	return n, nil
}

func (h *heatshrinkWriter) Close() error {
	if h.closed {
		return h.err
	}
	h.closed = true
	if h.err != nil {
		return h.err
	}
	h.encode(true)
	if h.nacc > 0 {
		// Pad the last byte with zero bits, as the C encoder does.
		h.out = append(h.out, byte(h.acc<<(8-h.nacc)))
		h.nacc = 0
	}
	return h.flushOut()
}

// compact drops what lies more than a window behind pos.
func (h *heatshrinkWriter) compact() {
	drop := h.pos - h.winSize - h.base
	if drop <= 0 {
		return
	}
	kept := copy(h.buf, h.buf[drop:])
	h.buf = h.buf[:kept]
	h.base += drop
}

func (h *heatshrinkWriter) flushOut() error {
	if len(h.out) == 0 {
		return nil
	}
	if _, err := h.w.Write(h.out); err != nil {
		h.err = fmt.Errorf("compress: heatshrink: %w", err)
		return h.err
	}
	h.out = h.out[:0]
	return nil
}

func (h *heatshrinkWriter) hash(i int) int {
	b := h.buf[i-h.base:]
	var v uint32
	for j := range h.hashLen {
		v = v<<8 | uint32(b[j])
	}
	return int((v * 0x9E3779B1) >> (32 - hsHashBits))
}

// encode emits operations for the buffered input; unless final it stops
// where fewer than 2^lookahead bytes remain, since a later byte could
// lengthen the match.
func (h *heatshrinkWriter) encode(final bool) {
	end := h.base + len(h.buf)
	for h.pos < end {
		if !final && end-h.pos < h.maxLen {
			break
		}
		h.insertUpTo(h.pos, end)
		maxLen := min(h.maxLen, end-h.pos)
		dist, length := 0, 0
		if maxLen >= h.minMatch {
			dist, length = h.longestMatch(maxLen)
		}
		if length >= h.minMatch {
			h.putBits(0, 1)
			h.putBits(uint32(dist-1), h.wbits)
			h.putBits(uint32(length-1), h.lbits)
			h.pos += length
		} else {
			h.putBits(1<<8|uint32(h.buf[h.pos-h.base]), 9)
			h.pos++
		}
	}
}

// insertUpTo adds positions below upTo to the hash chains; a position whose
// hashed bytes run past end cannot start a match worth taking and is left out.
func (h *heatshrinkWriter) insertUpTo(upTo, end int) {
	for ; h.inserted < upTo && h.inserted+h.hashLen <= end; h.inserted++ {
		k := h.hash(h.inserted)
		h.prev[h.inserted&(h.winSize-1)] = h.head[k]
		h.head[k] = int32(h.inserted)
	}
}

// longestMatch walks the chain of pos, nearest candidate first, within the
// window; a strictly longer match replaces the best so far, so the nearest
// wins ties, as in the C encoder.
func (h *heatshrinkWriter) longestMatch(maxLen int) (dist, length int) {
	if h.pos+h.hashLen > h.base+len(h.buf) {
		return 0, 0
	}
	lowest := h.pos - h.winSize
	needle := h.buf[h.pos-h.base : h.pos-h.base+maxLen]
	for cand := int(h.head[h.hash(h.pos)]); cand >= lowest && cand >= 0; cand = int(h.prev[cand&(h.winSize-1)]) {
		hay := h.buf[cand-h.base:]
		// Skip candidates that cannot beat the best so far.
		if hay[length] != needle[length] {
			continue
		}
		n := 0
		for n < maxLen && hay[n] == needle[n] {
			n++
		}
		if n > length {
			dist, length = h.pos-cand, n
			if n == maxLen {
				break
			}
		}
	}
	return dist, length
}

// putBits appends the low n (<= 16) bits of v, most significant first.
func (h *heatshrinkWriter) putBits(v uint32, n uint) {
	h.acc = h.acc<<n | v&(1<<n-1)
	h.nacc += n
	for h.nacc >= 8 {
		h.nacc -= 8
		h.out = append(h.out, byte(h.acc>>h.nacc))
	}
	h.acc &= 1<<h.nacc - 1
}
