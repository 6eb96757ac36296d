package compress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Decoder decompresses a stream pushed to it in pieces. It is the one
// decoder of each kind: NewReader wraps it for pull-based readers, and a
// device that applies a patch while it downloads pushes bytes into it
// directly.
//
// Its whole state can be saved between calls (AppendBinary) and restored
// into a fresh decoder of the same kind (UnmarshalBinary), so that decoding
// can resume after a power cut. A restored decoder continues exactly as the
// saved one would have; UnmarshalBinary refuses a state that is truncated,
// of another kind or out of range, since saved states come from flash and
// may be damaged.
type Decoder interface {
	// Decode decompresses from src into dst and returns how many bytes of
	// each it used. It stops when dst is full or when no more output can be
	// made without more input; src is then used up. Output made before an
	// error is counted in nDst. After an error every call returns it again.
	Decode(dst, src []byte) (nDst, nSrc int, err error)
	// End says the input has ended: nil if it was a complete stream (and all
	// output was taken), else an error wrapping io.ErrUnexpectedEOF or the
	// decoding error seen before.
	End() error
	// AppendBinary appends the decoder's state; it fails after an error.
	AppendBinary(b []byte) ([]byte, error)
	// UnmarshalBinary replaces the decoder's state with a saved one.
	UnmarshalBinary(state []byte) error
}

// ErrState is wrapped by UnmarshalBinary's errors: the saved state is
// damaged or belongs to another decoder.
var ErrState = errors.New("compress: invalid decoder state")

// NewDecoder returns a push-based decoder of kind. Heatshrink streams may use
// any window the heatshrink library allows (up to 2^15 bytes); see
// NewHeatshrinkDecoder to bound it.
func NewDecoder(kind string) (Decoder, error) {
	switch kind {
	case "none":
		return &noneDecoder{}, nil
	case "crle":
		return NewCRLEDecoder(), nil
	case "heatshrink":
		return NewHeatshrinkDecoder(maxWindowBits)
	}
	return nil, fmt.Errorf("compress: unknown kind %q (want one of %v)", kind, Kinds)
}

// State tags: the first byte of each kind's saved state.
const (
	stateNone       = 'N'
	stateCRLE       = 'C'
	stateHeatshrink = 'H'
)

// noneDecoder copies.
type noneDecoder struct{}

func (noneDecoder) Decode(dst, src []byte) (int, int, error) {
	n := copy(dst, src)
	return n, n, nil
}

func (noneDecoder) End() error { return nil }

func (noneDecoder) AppendBinary(b []byte) ([]byte, error) { return append(b, stateNone), nil }

func (noneDecoder) UnmarshalBinary(state []byte) error {
	if len(state) != 1 || state[0] != stateNone {
		return fmt.Errorf("%w: not the state of a none decoder", ErrState)
	}
	return nil
}

// decoderReader pulls input from r into a small buffer and pushes it into
// a Decoder: the Reader of every kind.
type decoderReader struct {
	d        Decoder
	r        io.Reader
	buf      []byte
	off, end int
	eof      bool
	err      error
}

func newDecoderReader(d Decoder, r io.Reader) *decoderReader {
	return &decoderReader{d: d, r: r, buf: make([]byte, readBufferSize)}
}

func (r *decoderReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for r.err == nil {
		n, m, err := r.d.Decode(p, r.buf[r.off:r.end])
		r.off += m
		if err != nil {
			r.err = err
		}
		if n > 0 {
			return n, nil
		}
		if err != nil || r.off < r.end {
			continue
		}
		if r.eof {
			if r.err = r.d.End(); r.err == nil {
				r.err = io.EOF
			}
			break
		}
		k, err := r.r.Read(r.buf)
		r.off, r.end = 0, k
		if err == io.EOF {
			r.eof = true
		} else if err != nil {
			r.err = fmt.Errorf("compress: reading the compressed stream: %w", err)
		}
	}
	return 0, r.err
}

// StateReader reads a saved state (a decoder's, or a patcher's that
// holds one), remembering the first problem so that the fields can be
// read in a row and checked once. Its errors wrap ErrState.
type StateReader struct {
	b   []byte
	err error
}

// NewStateReader reads state.
func NewStateReader(state []byte) *StateReader { return &StateReader{b: state} }

// Byte reads one byte.
func (s *StateReader) Byte() byte {
	if len(s.b) == 0 {
		s.Fail("truncated")
		return 0
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c
}

// Uint reads an unsigned varint of at most max.
func (s *StateReader) Uint(what string, max uint64) uint64 {
	v, n := binary.Uvarint(s.b)
	if n <= 0 {
		s.Fail("truncated or overlong " + what)
		return 0
	}
	s.b = s.b[n:]
	if n != len(binary.AppendUvarint(nil, v)) {
		// One encoding per state, so that a restored state saves as loaded.
		s.Fail("overlong " + what)
		return 0
	}
	if v > max {
		s.Fail(fmt.Sprintf("%s %d out of range (at most %d)", what, v, max))
		return 0
	}
	return v
}

// Bytes reads n bytes (zeros when the state is too short).
func (s *StateReader) Bytes(n int) []byte {
	if len(s.b) < n {
		s.Fail("truncated")
		return make([]byte, n)
	}
	b := s.b[:n]
	s.b = s.b[n:]
	return b
}

// Fail records a problem, if it is the first.
func (s *StateReader) Fail(msg string) {
	if s.err == nil {
		s.err = fmt.Errorf("%w: %s", ErrState, msg)
	}
}

// Check records msg as a problem unless ok.
func (s *StateReader) Check(ok bool, msg string) {
	if !ok {
		s.Fail(msg)
	}
}

// Failed reports whether a problem was found so far.
func (s *StateReader) Failed() bool { return s.err != nil }

// Done reports the first problem, or bytes left over.
func (s *StateReader) Done() error {
	if s.err == nil && len(s.b) != 0 {
		s.Fail(fmt.Sprintf("%d bytes after the end", len(s.b)))
	}
	return s.err
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}
