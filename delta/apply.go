package delta

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// bufSize bounds Apply's memory: one buffer each for the patch, the
// decompressed stream, from and the output chunk, whatever the image size.
const bufSize = 32 << 10

// Apply reads a sequential patch from patch and writes the image it makes
// from from (fromSize bytes) to to, returning the bytes written. It refuses a
// malformed or truncated patch, one that reads outside from, one that writes
// more than the to size in its header, and one with data after its end; such
// errors wrap ErrCorrupt. On error, what was written to to must be discarded.
func Apply(from io.ReaderAt, fromSize int64, patch io.Reader, to io.Writer) (written int64, err error) {
	if fromSize < 0 {
		return 0, fmt.Errorf("negative from size %d", fromSize)
	}
	src := &sourceReader{r: patch}
	raw := bufio.NewReaderSize(src, bufSize)
	info, err := readHeader(raw)
	if err != nil {
		return 0, err
	}
	if info.ToSize == 0 {
		// detools writes no stream at all for an empty image.
		if _, err := raw.ReadByte(); err != io.EOF {
			return 0, corruptf("data follows the header of a patch to an empty image")
		}
		return 0, nil
	}
	c, err := lookupCodec(info.Compression)
	if err != nil {
		return 0, fmt.Errorf("cannot apply this patch: %w", err)
	}
	dr, err := c.reader(raw)
	if err != nil {
		return 0, fmt.Errorf("starting %s decompression: %w", info.Compression, err)
	}
	a := &applier{
		from:     from,
		fromSize: fromSize,
		patch:    bufio.NewReaderSize(dr, bufSize),
		to:       to,
		toSize:   info.ToSize,
		buf:      make([]byte, bufSize),
		fromBuf:  make([]byte, bufSize),
	}
	err = a.run()
	if err != nil && !errors.Is(err, ErrCorrupt) && (src.err == nil || src.err == io.EOF) {
		// Not the patch's source failing: its stream does not decode.
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return a.toPos, err
}

// sourceReader remembers the error the patch's own reader returned, so
// that Apply can tell a failing source from a stream that does not decode.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil {
		s.err = err
	}
	return n, err
}

type applier struct {
	from     io.ReaderAt
	fromSize int64
	fromPos  int64
	patch    *bufio.Reader
	to       io.Writer
	toSize   int64
	toPos    int64
	buf      []byte
	fromBuf  []byte
}

func (a *applier) run() error {
	// Data-format patches (detools --data-format) precede the chunks; the
	// C applier implements none of them, so neither do we.
	n, err := readSize(a.patch)
	if err != nil {
		return fmt.Errorf("reading the data format patch size: %w", err)
	}
	if n != 0 {
		return corruptf("data format patch of %d bytes: not supported (create the patch without --data-format)", n)
	}
	for chunk := 0; a.toPos < a.toSize; chunk++ {
		if err := a.chunk(); err != nil {
			return fmt.Errorf("chunk %d (to offset %d): %w", chunk, a.toPos, err)
		}
	}
	// The stream must end exactly here, as the C applier demands.
	if _, err := a.patch.ReadByte(); err != io.EOF {
		if err != nil {
			return fmt.Errorf("after the last chunk: %w", err)
		}
		return corruptf("data after the last chunk")
	}
	return nil
}

// chunk applies one (diff, extra, adjustment) triple.
func (a *applier) chunk() error {
	diff, err := a.dataSize("diff")
	if err != nil {
		return err
	}
	if diff > a.fromSize-a.fromPos {
		return corruptf("diff of %d bytes at from offset %d reads past the end of from (%d bytes): is this patch for another from image?", diff, a.fromPos, a.fromSize)
	}
	if err := a.copyData(diff, true); err != nil {
		return err
	}
	extra, err := a.dataSize("extra")
	if err != nil {
		return err
	}
	if err := a.copyData(extra, false); err != nil {
		return err
	}
	adj, err := readSize(a.patch)
	if err != nil {
		return fmt.Errorf("reading the adjustment: %w", err)
	}
	next := a.fromPos + adj
	if next < 0 || next > a.fromSize {
		return corruptf("adjustment %d moves the from offset to %d, outside from (%d bytes)", adj, next, a.fromSize)
	}
	a.fromPos = next
	return nil
}

func (a *applier) dataSize(what string) (int64, error) {
	n, err := readSize(a.patch)
	if err != nil {
		return 0, fmt.Errorf("reading the %s size: %w", what, err)
	}
	if n < 0 {
		return 0, corruptf("negative %s size %d", what, n)
	}
	if n > a.toSize-a.toPos {
		return 0, corruptf("%s of %d bytes would write past the to size %d", what, n, a.toSize)
	}
	return n, nil
}

// copyData moves n bytes of the stream to the output; diff bytes are added
// (mod 256) to the from bytes at the from offset, extra bytes are copied.
func (a *applier) copyData(n int64, diff bool) error {
	for n > 0 {
		k := int(min(n, int64(len(a.buf))))
		b := a.buf[:k]
		if _, err := io.ReadFull(a.patch, b); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return corruptf("patch is truncated inside %s data", kind(diff))
			}
			return fmt.Errorf("reading %s data: %w", kind(diff), err)
		}
		if diff {
			f := a.fromBuf[:k]
			got, err := a.from.ReadAt(f, a.fromPos)
			if got < k {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("reading from at offset %d: %w", a.fromPos, err)
			}
			for i := range b {
				b[i] += f[i]
			}
			a.fromPos += int64(k)
		}
		if _, err := a.to.Write(b); err != nil {
			return fmt.Errorf("writing the to image at offset %d: %w", a.toPos, err)
		}
		a.toPos += int64(k)
		n -= int64(k)
	}
	return nil
}

func kind(diff bool) string {
	if diff {
		return "diff"
	}
	return "extra"
}
