package bundle

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
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
}

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
	if want := paddedSize(m.PlaintextSize); m.CiphertextSize != want {
		return bad("ciphertext_size %d does not match plaintext_size %d (want %d)", m.CiphertextSize, m.PlaintextSize, want)
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
