package bundle

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/semver"
)

// CipherAES256CBC is the only cipher of format version 1.
const CipherAES256CBC = "aes-256-cbc"

// Manifest is the signed description of a release. The signature covers the
// exact bytes the manifest was encoded to, so every field below is bound:
// changing any of them after signing makes the bundle fail verification.
type Manifest struct {
	Format           int       `json:"format"`
	Product          string    `json:"product"`
	Hardware         string    `json:"hardware"`
	Version          string    `json:"version"`
	SecurityCounter  uint32    `json:"security_counter"`
	PlaintextSize    int64     `json:"plaintext_size"`
	PlaintextSHA256  string    `json:"plaintext_sha256"`
	Cipher           string    `json:"cipher"`
	IV               string    `json:"iv"`
	CiphertextSize   int64     `json:"ciphertext_size"`
	CiphertextSHA256 string    `json:"ciphertext_sha256"`
	ChunkSize        int       `json:"chunk_size"`
	Created          time.Time `json:"created"`
	KeyID            string    `json:"key_id"`
	SignatureAlg     string    `json:"signature_alg"`
	Notes            string    `json:"notes,omitempty"`

	// Delta manifests only (Kind KindDelta), left out of full ones so that
	// those read as before. A delta manifest describes a patch onto one
	// base image: PlaintextSize and PlaintextSHA256 are the target's (the
	// release's image, what the patch must produce), IV, CiphertextSize and
	// CiphertextSHA256 the encrypted patch's.
	Kind        string `json:"kind,omitempty"`
	BaseVersion string `json:"base_version,omitempty"`
	BaseSize    int64  `json:"base_size,omitempty"`
	BaseSHA256  string `json:"base_sha256,omitempty"`
	Compression string `json:"compression,omitempty"`
	PatchSize   int64  `json:"patch_size,omitempty"`
}

// Manifest kinds.
const (
	KindFull  = ""      // the whole image
	KindDelta = "delta" // a patch onto one base image
)

// DeltaCompressions are the patch compressions a delta manifest may name.
var DeltaCompressions = []string{"heatshrink", "crle", "none"}

// MaxPatchSize bounds a delta's patch: a patch larger than twice its
// target is never worth sending instead of the image.
const MaxPatchSize = 2 * MaxFirmwareSize

// Chunks is the number of ChunkSize pieces the ciphertext is served in.
// EncodedSize is the length of the manifest as fota writes it in a bundle
// (and the server hands it to devices), signed bytes and all.
func (m *Manifest) EncodedSize() int {
	b, err := jsonMarshal(m)
	if err != nil {
		return 0
	}
	return len(b)
}

func (m *Manifest) Chunks() int {
	return int((m.CiphertextSize + int64(m.ChunkSize) - 1) / int64(m.ChunkSize))
}

// IVBytes returns the decoded IV of a validated manifest.
func (m *Manifest) IVBytes() []byte {
	iv, _ := hex.DecodeString(m.IV)
	return iv
}

// PlaintextDigest returns the decoded plaintext SHA-256 of a validated manifest.
func (m *Manifest) PlaintextDigest() (d [32]byte) {
	hex.Decode(d[:], []byte(m.PlaintextSHA256))
	return d
}

// CiphertextDigest returns the decoded ciphertext SHA-256 of a validated manifest.
func (m *Manifest) CiphertextDigest() (d [32]byte) {
	hex.Decode(d[:], []byte(m.CiphertextSHA256))
	return d
}

// ParseManifest decodes and validates manifest bytes. It does not check the
// signature: callers that trust the result use Envelope.Verify.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%w: manifest is %d bytes, limit %d", ErrMalformed, len(b), MaxManifestSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: manifest is not valid JSON: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the manifest object", ErrMalformed)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks every field for range and consistency. It is applied to
// manifests being built and to manifests being read.
func (m *Manifest) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: manifest %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	if m.Format != FormatVersion {
		return fmt.Errorf("%w: manifest format %d (this fota reads %d)", ErrUnsupportedVersion, m.Format, FormatVersion)
	}
	if err := checkName(m.Product, 64); err != nil {
		return bad("product: %v", err)
	}
	if err := checkName(m.Hardware, 32); err != nil {
		return bad("hardware: %v", err)
	}
	if _, err := semver.Parse(m.Version); err != nil {
		return bad("version: %v", err)
	}
	if m.PlaintextSize <= 0 {
		return bad("plaintext_size %d: firmware is empty", m.PlaintextSize)
	}
	if m.PlaintextSize > MaxFirmwareSize {
		return fmt.Errorf("%w: firmware of %d bytes exceeds the limit of %d", ErrTooLarge, m.PlaintextSize, MaxFirmwareSize)
	}
	if m.Cipher != CipherAES256CBC {
		return bad("cipher %q (want %q)", m.Cipher, CipherAES256CBC)
	}
	if err := m.validateKind(); err != nil {
		return err
	}
	if err := checkHex(m.IV, 16); err != nil {
		return bad("iv: %v", err)
	}
	if err := checkHex(m.PlaintextSHA256, 32); err != nil {
		return bad("plaintext_sha256: %v", err)
	}
	if err := checkHex(m.CiphertextSHA256, 32); err != nil {
		return bad("ciphertext_sha256: %v", err)
	}
	if m.ChunkSize < MinChunkSize || m.ChunkSize > MaxChunkSize || m.ChunkSize%16 != 0 {
		return bad("chunk_size %d (want a multiple of 16 from %d to %d)", m.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if m.Created.IsZero() {
		return bad("created is missing")
	}
	if err := checkHex(m.KeyID, 8); err != nil {
		return bad("key_id: %v", err)
	}
	switch m.SignatureAlg {
	case keys.AlgRSA, keys.AlgECDSA, keys.AlgEd25519:
	default:
		return bad("signature_alg %q (want one of %v)", m.SignatureAlg, keys.Algorithms)
	}
	if len(m.Notes) > MaxNotesSize {
		return bad("notes are %d bytes, limit %d", len(m.Notes), MaxNotesSize)
	}
	return nil
}

// validateKind checks the fields that differ between full and delta
// manifests: what the ciphertext encrypts, and the patch's base.
func (m *Manifest) validateKind() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: manifest %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	switch m.Kind {
	case KindFull:
		if m.BaseVersion != "" || m.BaseSize != 0 || m.BaseSHA256 != "" || m.Compression != "" || m.PatchSize != 0 {
			return bad("of a full image has delta fields (base_*, compression, patch_size) but no kind \"delta\"")
		}
		if want := paddedSize(m.PlaintextSize); m.CiphertextSize != want {
			return bad("ciphertext_size %d does not match plaintext_size %d (want %d)", m.CiphertextSize, m.PlaintextSize, want)
		}
	case KindDelta:
		if _, err := semver.Parse(m.BaseVersion); err != nil {
			return bad("base_version: %v", err)
		}
		if m.BaseSize <= 0 || m.BaseSize > MaxFirmwareSize {
			return bad("base_size %d (want 1 to %d)", m.BaseSize, int64(MaxFirmwareSize))
		}
		if err := checkHex(m.BaseSHA256, 32); err != nil {
			return bad("base_sha256: %v", err)
		}
		if !slices.Contains(DeltaCompressions, m.Compression) {
			return bad("compression %q (want one of %v)", m.Compression, DeltaCompressions)
		}
		if m.PatchSize <= 0 || m.PatchSize > MaxPatchSize {
			return bad("patch_size %d (want 1 to %d)", m.PatchSize, int64(MaxPatchSize))
		}
		if want := paddedSize(m.PatchSize); m.CiphertextSize != want {
			return bad("ciphertext_size %d does not match patch_size %d (want %d)", m.CiphertextSize, m.PatchSize, want)
		}
	default:
		return bad("kind %q (want \"delta\", or none for a full image)", m.Kind)
	}
	return nil
}

// BaseDigest returns the decoded base SHA-256 of a validated delta manifest.
func (m *Manifest) BaseDigest() (d [32]byte) {
	hex.Decode(d[:], []byte(m.BaseSHA256))
	return d
}

// CheckDeltaOf checks that a delta manifest describes a patch to the
// release of full: the same product, hardware, version, counter, target
// image, chunk size and key. Everything a device checks in a full manifest
// must hold for a delta the same way.
func (m *Manifest) CheckDeltaOf(full *Manifest) error {
	if m.Kind != KindDelta {
		return fmt.Errorf("%w: manifest of kind %q where a delta was expected", ErrMalformed, m.Kind)
	}
	if full.Kind != KindFull {
		return fmt.Errorf("%w: a delta's release manifest is itself of kind %q", ErrMalformed, full.Kind)
	}
	type fields struct {
		product, hardware, version string
		counter                    uint32
		size                       int64
		sha                        string
		chunk                      int
		key, alg                   string
	}
	a := fields{m.Product, m.Hardware, m.Version, m.SecurityCounter, m.PlaintextSize, m.PlaintextSHA256, m.ChunkSize, m.KeyID, m.SignatureAlg}
	b := fields{full.Product, full.Hardware, full.Version, full.SecurityCounter, full.PlaintextSize, full.PlaintextSHA256, full.ChunkSize, full.KeyID, full.SignatureAlg}
	if a != b {
		return fmt.Errorf("%w: delta from %s describes %s %s %s (%d bytes, sha256 %.12s…), not the release %s %s %s (%d bytes, sha256 %.12s…) it is bundled with",
			ErrMalformed, m.BaseVersion, m.Product, m.Hardware, m.Version, m.PlaintextSize, m.PlaintextSHA256,
			full.Product, full.Hardware, full.Version, full.PlaintextSize, full.PlaintextSHA256)
	}
	return nil
}

// paddedSize is the PKCS#7-padded size: always at least one byte of padding.
func paddedSize(n int64) int64 { return (n/16 + 1) * 16 }

func checkName(s string, max int) error {
	if s == "" {
		return fmt.Errorf("empty")
	}
	if len(s) > max {
		return fmt.Errorf("%q is longer than %d characters", s, max)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%q has character %q (allowed: letters, digits, - _ .)", s, c)
		}
	}
	return nil
}

func checkHex(s string, n int) error {
	if len(s) != 2*n {
		return fmt.Errorf("want %d hex characters, got %d", 2*n, len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("want lowercase hex, got %q", c)
		}
	}
	return nil
}
