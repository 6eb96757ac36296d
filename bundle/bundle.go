// Package bundle builds, reads and verifies fota release bundles: one file
// holding a signed manifest and the AES-256-CBC encrypted firmware.
//
// Layout (docs/FORMAT.md has it byte by byte, with test vectors):
//
//	header (16 bytes) | manifest (JSON) | signature | legacy signature | ciphertext
//
// The header and manifest come first so that a device or server can verify
// what a release is before it reads, downloads or stores a byte of firmware.
//
// Threat model:
//   - The signature, by the release engineer's key, covers the exact manifest
//     bytes: version, hardware, security counter, sizes, both SHA-256 digests,
//     IV and chunk size. A server or network that alters any of them, or that
//     offers an older validly signed release as new, is caught by the checks
//     that follow from the manifest (downgrade and counter checks belong to
//     the device, which knows what it runs).
//   - The ciphertext SHA-256 in the signed manifest binds the payload; the
//     plaintext SHA-256 checks the decryption end to end.
//   - Encryption keeps firmware confidential from the server and the wire; it
//     is not relied on for integrity.
//   - Every length read from a bundle is bounded by a named limit before any
//     memory is allocated for it, so a hostile file cannot exhaust memory.
package bundle

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/ecowatt/fota/keys"
)

// Format constants.
const (
	Magic         = "FOTA"
	FormatVersion = 1
	HeaderSize    = 16

	MaxManifestSize  = 64 << 10
	MaxSignatureSize = 1024
	MaxNotesSize     = 4096
	// MaxFirmwareSize is the format's bound; devices apply their slot size.
	MaxFirmwareSize  = 256 << 20
	MinChunkSize     = 256
	MaxChunkSize     = 64 << 10
	DefaultChunkSize = 1024
)

// Errors a bundle can fail with. Each is wrapped with the detail.
var (
	ErrMalformed          = errors.New("malformed bundle")
	ErrTruncated          = errors.New("truncated bundle")
	ErrUnsupportedVersion = errors.New("unsupported bundle format")
	ErrTooLarge           = errors.New("bundle exceeds a size limit")
	ErrSignature          = errors.New("signature does not match key")
	ErrUntrustedKey       = errors.New("bundle is signed by an untrusted key")
	ErrCiphertextHash     = errors.New("ciphertext sha256 mismatch")
	ErrPlaintextHash      = errors.New("plaintext sha256 mismatch")
	ErrPlaintextSize      = errors.New("plaintext size mismatch")
	ErrDecrypt            = errors.New("decryption failed")
	ErrTrailingData       = errors.New("data after the end of the ciphertext")
)

// header is the fixed 16-byte start of a bundle:
//
//	0  magic "FOTA"
//	4  format version, uint16 big endian
//	6  flags, uint16, must be 0
//	8  manifest length, uint32 big endian
//	12 signature length, uint16 big endian
//	14 legacy signature length, uint16 big endian, 0 when there is none
type header struct {
	manifestLen  uint32
	signatureLen uint16
	legacyLen    uint16
}

func (h header) marshal() []byte {
	b := make([]byte, HeaderSize)
	copy(b, Magic)
	binary.BigEndian.PutUint16(b[4:], FormatVersion)
	binary.BigEndian.PutUint32(b[8:], h.manifestLen)
	binary.BigEndian.PutUint16(b[12:], h.signatureLen)
	binary.BigEndian.PutUint16(b[14:], h.legacyLen)
	return b
}

func parseHeader(b []byte) (header, error) {
	if string(b[:4]) != Magic {
		return header{}, fmt.Errorf("%w: not a fota bundle (magic %q)", ErrMalformed, b[:4])
	}
	if v := binary.BigEndian.Uint16(b[4:]); v != FormatVersion {
		return header{}, fmt.Errorf("%w: format version %d (this fota reads %d; upgrade fota)", ErrUnsupportedVersion, v, FormatVersion)
	}
	if f := binary.BigEndian.Uint16(b[6:]); f != 0 {
		return header{}, fmt.Errorf("%w: unknown header flags 0x%04x", ErrMalformed, f)
	}
	h := header{
		manifestLen:  binary.BigEndian.Uint32(b[8:]),
		signatureLen: binary.BigEndian.Uint16(b[12:]),
		legacyLen:    binary.BigEndian.Uint16(b[14:]),
	}
	if h.manifestLen == 0 || h.manifestLen > MaxManifestSize {
		return header{}, fmt.Errorf("%w: manifest length %d (limit %d)", ErrTooLarge, h.manifestLen, MaxManifestSize)
	}
	if h.signatureLen == 0 || h.signatureLen > MaxSignatureSize {
		return header{}, fmt.Errorf("%w: signature length %d (limit %d)", ErrTooLarge, h.signatureLen, MaxSignatureSize)
	}
	if h.legacyLen > MaxSignatureSize {
		return header{}, fmt.Errorf("%w: legacy signature length %d (limit %d)", ErrTooLarge, h.legacyLen, MaxSignatureSize)
	}
	return h, nil
}

// Envelope is the part of a bundle before the ciphertext: the raw manifest
// bytes, the signature over them and, for RSA releases, the legacy signature.
type Envelope struct {
	ManifestBytes []byte
	Signature     []byte
	// LegacySignature is RSA PKCS#1 v1.5 over the plaintext SHA-256: what the
	// original EcoWatt ESP32 client checks. It sits outside the manifest so
	// that both signatures can be made at once; Verify checks it against the
	// signed plaintext digest, so it cannot be swapped for another.
	LegacySignature []byte
}

// PayloadOffset is where the ciphertext starts in the bundle file.
func (e *Envelope) PayloadOffset() int64 {
	return int64(HeaderSize + len(e.ManifestBytes) + len(e.Signature) + len(e.LegacySignature))
}

// ReadEnvelope reads the header, manifest and signature from r, leaving r at
// the first ciphertext byte. Sizes are checked against the limits before
// anything is allocated.
func ReadEnvelope(r io.Reader) (*Envelope, error) {
	var hb [HeaderSize]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return nil, readErr("header", err)
	}
	h, err := parseHeader(hb[:])
	if err != nil {
		return nil, err
	}
	e := &Envelope{ManifestBytes: make([]byte, h.manifestLen), Signature: make([]byte, h.signatureLen)}
	if h.legacyLen > 0 {
		e.LegacySignature = make([]byte, h.legacyLen)
	}
	if _, err := io.ReadFull(r, e.ManifestBytes); err != nil {
		return nil, readErr("manifest", err)
	}
	if _, err := io.ReadFull(r, e.Signature); err != nil {
		return nil, readErr("signature", err)
	}
	if _, err := io.ReadFull(r, e.LegacySignature); err != nil {
		return nil, readErr("legacy signature", err)
	}
	return e, nil
}

func readErr(region string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: file ends inside the %s", ErrTruncated, region)
	}
	return fmt.Errorf("read bundle %s: %w", region, err)
}

// Verify checks the signature with the first trusted key whose id the
// manifest names, and only then parses the manifest. For RSA releases it
// also checks the legacy signature, so the legacy API never serves a
// release whose legacy signature would fail on the device.
func (e *Envelope) Verify(trusted ...*keys.PublicKey) (*Manifest, error) {
	if len(trusted) == 0 {
		return nil, fmt.Errorf("%w: no trusted public key given", ErrUntrustedKey)
	}
	// The key id is read before the signature is checked only to pick a key;
	// nothing else of the unverified manifest is used.
	var hint struct {
		KeyID string `json:"key_id"`
	}
	_ = json.Unmarshal(e.ManifestBytes, &hint)
	key := trusted[0]
	for _, k := range trusted {
		if k.ID() == hint.KeyID {
			key = k
			break
		}
	}
	if err := key.Verify(e.ManifestBytes, e.Signature); err != nil {
		if hint.KeyID != "" && hint.KeyID != key.ID() {
			return nil, fmt.Errorf("%w: signed by key %s, trusted: %s", ErrUntrustedKey, sanitize(hint.KeyID), keyIDs(trusted))
		}
		return nil, fmt.Errorf("%w %s", ErrSignature, key.ID())
	}
	m, err := ParseManifest(e.ManifestBytes)
	if err != nil {
		return nil, err
	}
	if m.SignatureAlg != key.Alg() {
		return nil, fmt.Errorf("%w: manifest says %s, key is %s", ErrMalformed, m.SignatureAlg, key.Alg())
	}
	if e.LegacySignature != nil {
		if err := key.VerifyDigest(m.PlaintextDigest(), e.LegacySignature); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSignature, err)
		}
	}
	return m, nil
}

// Unverified parses the manifest without checking the signature, for
// display only: nothing read this way may be trusted.
func (e *Envelope) Unverified() (*Manifest, error) {
	return ParseManifest(e.ManifestBytes)
}

func keyIDs(ks []*keys.PublicKey) string {
	s := ""
	for i, k := range ks {
		if i > 0 {
			s += ", "
		}
		s += k.ID()
	}
	return s
}

// sanitize keeps attacker-chosen text short and printable in messages.
func sanitize(s string) string {
	if len(s) > 32 {
		s = s[:32]
	}
	return strconv.Quote(s)
}
