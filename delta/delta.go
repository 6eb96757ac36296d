// Package delta creates and applies detools-compatible sequential patches,
// the delta format ESP32 devices apply with Espressif's esp_delta_ota (which
// embeds detools' C applier). Pure Go: no cgo, no Python.
//
// A patch turns a "from" image (what the device runs) into a "to" image (the
// release). docs/FORMAT.md ("Delta patches") describes the bytes; testdata/
// holds vectors that any other applier can check itself against.
//
// Trust: a patch is not authenticated here. Callers verify the patch's
// signature before applying it and verify the result (hash of the to image)
// before booting it. Apply still treats every patch byte as hostile: sizes
// are bounded before use, reads stay inside from, writes never exceed the
// declared to size, and memory stays bounded whatever the patch says.
package delta

import (
	"errors"
	"fmt"
	"io"
	"sort"
)

// Patch types, as detools numbers them in the header byte.
const (
	typeSequential = 0
	typeInPlace    = 1
	typeHDiffPatch = 2
)

var typeNames = map[int]string{
	typeSequential: "sequential",
	typeInPlace:    "in-place",
	typeHDiffPatch: "hdiffpatch",
}

// compressionIDs are detools' compression numbers. All are known so that
// PatchInfo can name them; only those in codecs can be created or applied.
var compressionIDs = map[string]int{
	"none":       0,
	"lzma":       1,
	"crle":       2,
	"bz2":        3,
	"heatshrink": 4,
	"zstd":       5,
	"lz4":        6,
}

func compressionName(id int) (string, bool) {
	for name, n := range compressionIDs {
		if n == id {
			return name, true
		}
	}
	return "", false
}

// MaxSize is the largest image, chunk or offset a patch can describe. detools'
// C applier reads sizes into an int and refuses a size field longer than four
// bytes, which holds 6+7+7+7 = 27 bits; a larger patch would be valid to
// Python's detools but refused by the devices.
const MaxSize = 1<<27 - 1

// ErrCorrupt is wrapped by every error Apply and PatchInfo return for a patch
// that is malformed, truncated or inconsistent with from.
var ErrCorrupt = errors.New("corrupt delta patch")

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// Info is what a patch's header says.
type Info struct {
	Type        string // "sequential"; PatchInfo reports others but refuses them
	Compression string // detools' name: "none", "heatshrink", "crle", ...
	ToSize      int64  // size of the image the patch produces
}

// PatchInfo reads the header of patch.
func PatchInfo(patch []byte) (Info, error) {
	var r sliceReader = sliceReader{b: patch}
	info, err := readHeader(&r)
	if err != nil {
		return info, err
	}
	if info.ToSize == 0 && r.off != len(patch) {
		return info, corruptf("%d bytes follow the header of a patch to an empty image", len(patch)-r.off)
	}
	return info, nil
}

type sliceReader struct {
	b   []byte
	off int
}

func (s *sliceReader) ReadByte() (byte, error) {
	if s.off >= len(s.b) {
		return 0, io.EOF
	}
	s.off++
	return s.b[s.off-1], nil
}

// readHeader reads the header byte (bit 7 zero, bits 6-4 patch type, bits 3-0
// compression) and the to size, which detools writes outside the compressed
// stream.
func readHeader(r io.ByteReader) (Info, error) {
	var info Info
	b, err := r.ReadByte()
	if err != nil {
		return info, corruptf("empty patch: no header byte")
	}
	if b&0x80 != 0 {
		return info, corruptf("header byte %#02x has its reserved top bit set: not a detools patch", b)
	}
	typ, comp := int(b>>4), int(b&0x0f)
	name, ok := typeNames[typ]
	if !ok {
		return info, corruptf("unknown patch type %d in header byte %#02x: not a detools patch", typ, b)
	}
	info.Type = name
	cname, ok := compressionName(comp)
	if !ok {
		return info, corruptf("unknown compression %d in header byte %#02x", comp, b)
	}
	info.Compression = cname
	if typ != typeSequential {
		return info, fmt.Errorf("%s patches are not supported, only sequential ones: create the patch with detools' default --type sequential", name)
	}
	size, err := readSize(r)
	if err != nil {
		return info, fmt.Errorf("reading the to size: %w", err)
	}
	if size < 0 {
		return info, corruptf("negative to size %d", size)
	}
	info.ToSize = size
	return info, nil
}

// appendSize appends v in detools' size encoding: the first byte holds a
// continuation bit (7), a sign bit (6) and the low 6 bits of |v|; each
// further byte a continuation bit and the next 7 bits. Zero is one 0x00 byte.
func appendSize(b []byte, v int64) []byte {
	first := byte(0)
	if v < 0 {
		first = 0x40
		v = -v
	}
	first |= byte(v & 0x3f)
	v >>= 6
	if v == 0 {
		return append(b, first)
	}
	b = append(b, first|0x80)
	for v >= 0x80 {
		b = append(b, byte(v&0x7f)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// maxSizeBytes is the longest size field the C applier accepts (see MaxSize).
const maxSizeBytes = 4

// readSize reads one size field, refusing fields the C applier would refuse.
func readSize(r io.ByteReader) (int64, error) {
	var v int64
	shift := 0
	negative := false
	for i := 0; ; i++ {
		if i == maxSizeBytes {
			return 0, corruptf("size field longer than %d bytes (limit %d)", maxSizeBytes, MaxSize)
		}
		b, err := r.ReadByte()
		if err == io.EOF {
			return 0, corruptf("patch is truncated inside a size field")
		}
		if err != nil {
			return 0, err
		}
		if i == 0 {
			negative = b&0x40 != 0
			v = int64(b & 0x3f)
			shift = 6
		} else {
			v |= int64(b&0x7f) << shift
			shift += 7
		}
		if b&0x80 == 0 {
			break
		}
	}
	if negative {
		v = -v
	}
	return v, nil
}

// Compressions lists the compressions this build can create and apply.
func Compressions() []string {
	var names []string
	for name := range codecs {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
