// Package compress implements the stream compressions that detools
// (github.com/eerimoq/detools, used by Espressif's esp_delta_ota) applies to
// the body of a sequential patch: "none", "crle" and "heatshrink".
//
// The encodings are byte-compatible with detools: crle with detools' own
// Python encoder and C decoder, heatshrink with the heatshrink C library that
// detools uses, including the one header byte detools writes before the
// heatshrink bitstream. Patches are made on the server, where memory is
// plentiful; they are applied on devices, so every reader here decodes with
// memory bounded by its window (at most 32 KiB for heatshrink, a few bytes
// for crle) plus a small read buffer, whatever the input.
package compress

import (
	"fmt"
	"io"
)

// Kinds lists the supported kinds.
var Kinds = []string{"none", "crle", "heatshrink"}

// NewWriter returns a writer that compresses into w; Close flushes the end of the stream.
// Close does not close w.
func NewWriter(kind string, w io.Writer) (io.WriteCloser, error) {
	switch kind {
	case "none":
		return nopCloser{w}, nil
	case "crle":
		return newCRLEWriter(w), nil
	case "heatshrink":
		return newHeatshrinkWriter(w, defaultWindowBits, defaultLookaheadBits)
	}
	return nil, fmt.Errorf("compress: unknown kind %q (want one of %v)", kind, Kinds)
}

// NewReader returns a reader that decompresses r, streaming with bounded memory.
func NewReader(kind string, r io.Reader) (io.Reader, error) {
	switch kind {
	case "none":
		return r, nil
	case "crle":
		return newCRLEReader(r), nil
	case "heatshrink":
		return newHeatshrinkReader(r), nil
	}
	return nil, fmt.Errorf("compress: unknown kind %q (want one of %v)", kind, Kinds)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// readBufferSize bounds the read-ahead of the decoders; together with the
// window it is all the memory a reader holds.
const readBufferSize = 1024
