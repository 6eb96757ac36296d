// Package esp32 reads and writes the parts of an ESP-IDF application image
// that an update system needs: the image header (which chip it is built for)
// and the application descriptor (version, project name, secure version).
//
// Layout, as ESP-IDF defines it (esp_image_format.h, esp_app_desc.h):
//
//	0x00  image magic 0xE9
//	0x01  segment count
//	0x0C  chip id (uint16, little endian)
//	0x17  hash appended flag
//	0x18  first segment header: load address, length (uint32 each)
//	0x20  esp_app_desc_t: magic 0xABCD5432, secure_version at 0x24,
//	      version char[32] at 0x30, project_name char[32] at 0x50,
//	      time char[16] at 0x70, date char[16] at 0x80, idf_ver char[32] at 0x90
package esp32

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const (
	// ImageMagic is the first byte of every ESP32 application image.
	ImageMagic = 0xE9
	// AppDescMagic marks the application descriptor at DescriptorOffset.
	AppDescMagic = 0xABCD5432
	// DescriptorOffset is where esp_app_desc_t starts in an app image.
	DescriptorOffset = 0x20
	// HeaderSize is how many leading bytes Parse needs.
	HeaderSize = DescriptorOffset + appDescSize

	appDescSize     = 256
	imageHeaderSize = 24
)

// ErrNotESP32 means the bytes are not an ESP32 application image with an
// application descriptor; the caller must be told the version explicitly.
var ErrNotESP32 = errors.New("not an ESP32 application image")

// ErrBadDescriptor means the image has an app descriptor that breaks
// ESP-IDF's rules (a string field without its terminating NUL).
var ErrBadDescriptor = errors.New("malformed ESP32 app descriptor")

// chips maps esp_chip_id_t values to the names used as hardware identifiers.
var chips = map[uint16]string{
	0x0000: "esp32",
	0x0002: "esp32s2",
	0x0005: "esp32c3",
	0x0009: "esp32s3",
	0x000C: "esp32c2",
	0x000D: "esp32c6",
	0x0010: "esp32h2",
	0x0012: "esp32p4",
}

// ChipID returns the esp_chip_id_t of a chip name such as "esp32s3".
func ChipID(name string) (uint16, bool) {
	for id, n := range chips {
		if n == name {
			return id, true
		}
	}
	return 0, false
}

// AppInfo is what an image header and app descriptor say about an image.
type AppInfo struct {
	ChipID        uint16
	Chip          string // "esp32", "esp32s3", ...; "chip-0xNNNN" when unknown
	Version       string
	ProjectName   string
	SecureVersion uint32
	Time, Date    string
	IDFVersion    string
}

// Parse reads the image header and app descriptor from the first HeaderSize
// bytes of an image. It returns ErrNotESP32 (wrapped) when either magic is
// missing or the data is too short.
func Parse(head []byte) (AppInfo, error) {
	if len(head) < HeaderSize {
		return AppInfo{}, fmt.Errorf("%w: %d bytes, an image is at least %d", ErrNotESP32, len(head), HeaderSize)
	}
	if head[0] != ImageMagic {
		return AppInfo{}, fmt.Errorf("%w: first byte is 0x%02X, not 0x%02X", ErrNotESP32, head[0], ImageMagic)
	}
	desc := head[DescriptorOffset:]
	if m := binary.LittleEndian.Uint32(desc); m != AppDescMagic {
		return AppInfo{}, fmt.Errorf("%w: no app descriptor (magic 0x%08X at 0x%X)", ErrNotESP32, m, DescriptorOffset)
	}
	info := AppInfo{
		ChipID:        binary.LittleEndian.Uint16(head[12:14]),
		SecureVersion: binary.LittleEndian.Uint32(desc[4:8]),
	}
	for _, f := range []struct {
		name string
		dst  *string
		raw  []byte
	}{
		{"version", &info.Version, desc[0x10:0x30]}, {"project_name", &info.ProjectName, desc[0x30:0x50]},
		{"time", &info.Time, desc[0x50:0x60]}, {"date", &info.Date, desc[0x60:0x70]}, {"idf_ver", &info.IDFVersion, desc[0x70:0x90]},
	} {
		// ESP-IDF always NUL-terminates these; a full field is a damaged or forged descriptor.
		i := bytes.IndexByte(f.raw, 0)
		if i < 0 {
			return AppInfo{}, fmt.Errorf("%w: %s field has no terminating NUL", ErrBadDescriptor, f.name)
		}
		*f.dst = string(f.raw[:i])
	}
	info.Chip = chips[info.ChipID]
	if info.Chip == "" {
		info.Chip = fmt.Sprintf("chip-0x%04x", info.ChipID)
	}
	return info, nil
}

// ReadInfo reads the head of r and parses it. A file shorter than an image
// header yields ErrNotESP32, not an I/O error.
func ReadInfo(r io.Reader) (AppInfo, error) {
	head := make([]byte, HeaderSize)
	n, err := io.ReadFull(r, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return AppInfo{}, fmt.Errorf("read image header: %w", err)
	}
	return Parse(head[:n])
}

// BuildImage returns a well-formed single-segment ESP32 application image:
// header, app descriptor carrying info, then payload, the XOR checksum and an
// appended SHA-256, as esptool lays them out. It exists to make test and
// simulator firmware that real tooling recognises.
func BuildImage(info AppInfo, payload []byte) ([]byte, error) {
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"version", info.Version, 32}, {"project name", info.ProjectName, 32},
		{"time", info.Time, 16}, {"date", info.Date, 16}, {"idf version", info.IDFVersion, 32},
	} {
		if len(f.value) >= f.max {
			return nil, fmt.Errorf("build esp32 image: %s %q does not fit in %d bytes with its NUL", f.name, f.value, f.max)
		}
	}
	segment := make([]byte, appDescSize+len(payload))
	binary.LittleEndian.PutUint32(segment[0:], AppDescMagic)
	binary.LittleEndian.PutUint32(segment[4:], info.SecureVersion)
	copy(segment[0x10:], info.Version)
	copy(segment[0x30:], info.ProjectName)
	copy(segment[0x50:], info.Time)
	copy(segment[0x60:], info.Date)
	copy(segment[0x70:], info.IDFVersion)
	copy(segment[appDescSize:], payload)
	// Segments are 4-byte aligned.
	for len(segment)%4 != 0 {
		segment = append(segment, 0)
	}

	var img bytes.Buffer
	hdr := make([]byte, imageHeaderSize)
	hdr[0] = ImageMagic
	hdr[1] = 1    // one segment
	hdr[2] = 2    // SPI mode DIO
	hdr[3] = 0x20 // 4 MB flash, 40 MHz
	binary.LittleEndian.PutUint32(hdr[4:], 0x400d0000+appDescSize)
	hdr[8] = 0xEE // no WP pin
	binary.LittleEndian.PutUint16(hdr[12:], info.ChipID)
	binary.LittleEndian.PutUint16(hdr[17:], 0xFFFF) // any max chip revision
	hdr[23] = 1                                     // SHA-256 appended
	img.Write(hdr)
	seg := make([]byte, 8)
	binary.LittleEndian.PutUint32(seg[0:], 0x3f400020)
	binary.LittleEndian.PutUint32(seg[4:], uint32(len(segment)))
	img.Write(seg)
	img.Write(segment)

	checksum := byte(0xEF)
	for _, b := range segment {
		checksum ^= b
	}
	// Pad so the checksum byte ends a 16-byte block.
	for (img.Len()+1)%16 != 0 {
		img.WriteByte(0)
	}
	img.WriteByte(checksum)
	sum := sha256.Sum256(img.Bytes())
	img.Write(sum[:])
	return img.Bytes(), nil
}
