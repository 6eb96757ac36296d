package delta

import (
	"fmt"
	"io"
	"strings"

	"github.com/ecowatt/fota/delta/compress"
)

// codec wraps the patch stream after the header: "none" here, crle and
// heatshrink (with detools' window and lookahead) from delta/compress.
type codec struct {
	writer func(w io.Writer) (io.WriteCloser, error)
	reader func(r io.Reader) (io.Reader, error)
}

var codecs = map[string]codec{
	"none": {
		writer: func(w io.Writer) (io.WriteCloser, error) { return nopCloser{w}, nil },
		reader: func(r io.Reader) (io.Reader, error) { return r, nil },
	},
	"crle":       compressed("crle"),
	"heatshrink": compressed("heatshrink"),
}

func compressed(kind string) codec {
	return codec{
		writer: func(w io.Writer) (io.WriteCloser, error) { return compress.NewWriter(kind, w) },
		reader: func(r io.Reader) (io.Reader, error) { return compress.NewReader(kind, r) },
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// lookupCodec finds the codec for a compression name, saying whether the name
// is unknown to detools or only missing from this build.
func lookupCodec(name string) (codec, error) {
	if c, ok := codecs[name]; ok {
		return c, nil
	}
	if _, ok := compressionIDs[name]; ok {
		return codec{}, fmt.Errorf("compression %s is not available in this build: detools defines it, fota makes and applies %s", name, strings.Join(Compressions(), ", "))
	}
	return codec{}, fmt.Errorf("unknown compression %q: fota makes and applies %s", name, strings.Join(Compressions(), ", "))
}
