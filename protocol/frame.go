package protocol

import (
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

// ReadFrame reads one frame from r into buf (grown as needed, up to
// maxData bytes of data). It returns io.EOF at a clean end of stream.
func ReadFrame(r io.Reader, buf []byte, maxData int) (Frame, []byte, error) {
	var hdr [FrameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return Frame{}, buf, io.EOF
		}
		return Frame{}, buf, fmt.Errorf("%w: header: %v", ErrFrame, err)
	}
	f := Frame{Index: int(binary.BigEndian.Uint32(hdr[0:4]))}
	n := int(binary.BigEndian.Uint32(hdr[4:8]))
	copy(f.MAC[:], hdr[8:])
	if n <= 0 || n > maxData {
		return Frame{}, buf, fmt.Errorf("%w: chunk %d claims %d bytes (limit %d)", ErrFrame, f.Index, n, maxData)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return Frame{}, buf, fmt.Errorf("%w: chunk %d data: %v", ErrFrame, f.Index, err)
	}
	f.Data = buf
	return f, buf, nil
}
