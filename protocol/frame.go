package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// FrameHeaderSize is the fixed part of a native chunk frame:
//
//	uint32 big-endian chunk index | uint32 big-endian data length | 32-byte chunk HMAC
//
// followed by the data. A chunks response is a sequence of frames.
const FrameHeaderSize = 4 + 4 + 32

// Frame is one chunk as the native API sends it.
type Frame struct {
	Index int
	MAC   [32]byte
	Data  []byte
}

// AppendFrameHeader appends the header of a frame to b.
func AppendFrameHeader(b []byte, index int, dataLen int, mac *[32]byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(index))
	b = binary.BigEndian.AppendUint32(b, uint32(dataLen))
	return append(b, mac[:]...)
}

// ErrFrame is returned for a malformed frame stream.
var ErrFrame = errors.New("malformed chunk frame")

// FrameReader reads a chunks response frame by frame through one buffer,
// without copying: a frame's Data is a view of the buffer, valid until the
// next call to Next. It reads the stream below in blocks of up to the buffer's
// size, not twice a frame: an HTTP body is several layers deep.
type FrameReader struct {
	br      *bufio.Reader
	maxData int
	pending int // bytes of the last frame returned, still in the buffer
}

// NewFrameReader reads frames of at most maxData bytes of data from r
// through a buffer of bufSize bytes (at least one whole frame).
func NewFrameReader(r io.Reader, maxData, bufSize int) *FrameReader {
	return &FrameReader{br: bufio.NewReaderSize(r, max(bufSize, FrameHeaderSize+maxData)), maxData: maxData}
}

// Next returns the next frame, or io.EOF at a clean end of stream.
func (fr *FrameReader) Next() (Frame, error) {
	if fr.pending > 0 {
		fr.br.Discard(fr.pending) // peeked before: cannot fail
		fr.pending = 0
	}
	hdr, err := fr.br.Peek(FrameHeaderSize)
	if err != nil {
		if errors.Is(err, io.EOF) && len(hdr) == 0 {
			return Frame{}, io.EOF
		}
		return Frame{}, fmt.Errorf("%w: header: %v", ErrFrame, unexpected(err))
	}
	f := Frame{Index: int(binary.BigEndian.Uint32(hdr[0:4]))}
	n := int(binary.BigEndian.Uint32(hdr[4:8]))
	copy(f.MAC[:], hdr[8:])
	if n <= 0 || n > fr.maxData {
		return Frame{}, fmt.Errorf("%w: chunk %d claims %d bytes (limit %d)", ErrFrame, f.Index, n, fr.maxData)
	}
	whole, err := fr.br.Peek(FrameHeaderSize + n)
	if err != nil {
		return Frame{}, fmt.Errorf("%w: chunk %d data: %v", ErrFrame, f.Index, unexpected(err))
	}
	f.Data = whole[FrameHeaderSize:]
	fr.pending = len(whole)
	return f, nil
}

// unexpected turns io.EOF inside a frame into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
