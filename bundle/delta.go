package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/ecowatt/fota/keys"
)

// Delta artifacts follow a bundle's ciphertext, one record each:
//
//	delta header (16 bytes) | delta manifest (JSON) | signature | ciphertext
//
// The delta header is the bundle header with magic DeltaMagic and no
// legacy signature (the EcoWatt API never serves a delta). Each record's
// manifest is of kind "delta" and is signed on its own: a device that is
// offered a patch verifies exactly what it applies, and one that takes
// full images never sees a delta manifest. A bundle without deltas ends
// with its ciphertext, as it always did.
const (
	DeltaMagic = "FOTD"
	// MaxDeltas bounds the delta records of one bundle.
	MaxDeltas = 16
)

// DeltaOptions describe one delta artifact to append to a bundle.
type DeltaOptions struct {
	BaseVersion string
	BaseSize    int64
	BaseSHA256  [32]byte
	Compression string // as the patch's own header says
	// IV for the patch's encryption; nil for a fresh random one (tests set
	// it to be reproducible).
	IV []byte
}

// WriteDelta encrypts patch, a detools patch from the base described in
// opts to the image of the release full describes, and writes it to dst as
// a delta record signed by signer. It returns the delta's manifest.
func WriteDelta(dst io.Writer, full *Manifest, patch []byte, opts DeltaOptions, signer *keys.SigningKey, fw keys.FirmwareKey) (*Manifest, error) {
	if signer == nil {
		return nil, errors.New("build delta: no signing key")
	}
	iv, err := ivOf(opts.IV)
	if err != nil {
		return nil, fmt.Errorf("build delta: %w", err)
	}
	var ct bytes.Buffer
	ctHash := sha256.New()
	ptHash := sha256.New()
	n, err := encryptStream(bytes.NewReader(patch), fw, iv, ptHash, ctHash, &ct)
	if err != nil {
		return nil, fmt.Errorf("build delta: encrypt patch: %w", err)
	}
	m := *full
	m.Notes = ""
	m.Kind = KindDelta
	m.BaseVersion = opts.BaseVersion
	m.BaseSize = opts.BaseSize
	m.BaseSHA256 = hex.EncodeToString(opts.BaseSHA256[:])
	m.Compression = opts.Compression
	m.PatchSize = n
	m.IV = hex.EncodeToString(iv)
	m.CiphertextSize = int64(ct.Len())
	m.CiphertextSHA256 = hex.EncodeToString(ctHash.Sum(nil))
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("build delta from %s: %w", opts.BaseVersion, err)
	}
	if err := m.CheckDeltaOf(full); err != nil {
		return nil, fmt.Errorf("build delta from %s: %w", opts.BaseVersion, err)
	}
	manifestBytes, err := jsonMarshal(&m)
	if err != nil {
		return nil, fmt.Errorf("build delta: encode manifest: %w", err)
	}
	sig, err := signer.Sign(manifestBytes)
	if err != nil {
		return nil, fmt.Errorf("build delta: sign: %w", err)
	}
	hdr := header{manifestLen: uint32(len(manifestBytes)), signatureLen: uint16(len(sig))}.marshal()
	copy(hdr, DeltaMagic)
	for _, part := range [][]byte{hdr, manifestBytes, sig, ct.Bytes()} {
		if _, err := dst.Write(part); err != nil {
			return nil, fmt.Errorf("build delta: write: %w", err)
		}
	}
	return &m, nil
}

// ReadDelta reads the next delta record's header, manifest and signature
// from r (positioned after the bundle's ciphertext or the previous delta's),
// leaving r at its ciphertext. It returns io.EOF, and nothing else, when
// the bundle ends cleanly there.
func ReadDelta(r io.Reader) (*Envelope, error) {
	var hb [HeaderSize]byte
	n, err := io.ReadFull(r, hb[:])
	if n == 0 && errors.Is(err, io.EOF) {
		return nil, io.EOF
	}
	if err != nil {
		if k := min(n, 4); string(hb[:k]) != DeltaMagic[:k] {
			return nil, fmt.Errorf("%w: %d bytes after the ciphertext, which are not a delta record", ErrTrailingData, n)
		}
		return nil, readErr("delta header", err)
	}
	if string(hb[:4]) != DeltaMagic {
		return nil, fmt.Errorf("%w: %q after the ciphertext, where a delta record (%q) or the end of the bundle belongs", ErrTrailingData, hb[:4], DeltaMagic)
	}
	copy(hb[:4], Magic)
	h, err := parseHeader(hb[:])
	if err != nil {
		return nil, fmt.Errorf("delta record: %w", err)
	}
	if h.legacyLen != 0 {
		return nil, fmt.Errorf("%w: a delta record has a legacy signature (%d bytes); deltas are never served to the EcoWatt API", ErrMalformed, h.legacyLen)
	}
	e := &Envelope{ManifestBytes: make([]byte, h.manifestLen), Signature: make([]byte, h.signatureLen)}
	if _, err := io.ReadFull(r, e.ManifestBytes); err != nil {
		return nil, readErr("delta manifest", err)
	}
	if _, err := io.ReadFull(r, e.Signature); err != nil {
		return nil, readErr("delta signature", err)
	}
	return e, nil
}

// VerifyDelta checks a delta record's signature and that it describes a
// patch to the release full describes, returning its manifest. bases are
// the base SHA-256s of the bundle's deltas before it: two deltas from one
// base are refused, since a device could not tell which to take.
func (e *Envelope) VerifyDelta(full *Manifest, bases []string, trusted ...*keys.PublicKey) (*Manifest, error) {
	m, err := e.Verify(trusted...)
	if err != nil {
		return nil, fmt.Errorf("delta record: %w", err)
	}
	if err := m.CheckDeltaOf(full); err != nil {
		return nil, err
	}
	for _, b := range bases {
		if b == m.BaseSHA256 {
			return nil, fmt.Errorf("%w: two deltas from the base %.12s… (%s)", ErrMalformed, m.BaseSHA256, m.BaseVersion)
		}
	}
	if len(bases) >= MaxDeltas {
		return nil, fmt.Errorf("%w: more than %d deltas", ErrTooLarge, MaxDeltas)
	}
	return m, nil
}

// VerifyCiphertext reads one artifact's ciphertext (exactly CiphertextSize
// bytes of r) and checks its signed SHA-256. Given the firmware key it
// decrypts as it reads, writing plaintext to dst (which may be nil), and
// checks the plaintext: a full image's size and SHA-256, a patch's size. It
// does not look past the ciphertext: VerifyPayload is it plus the check
// that the bundle ends there.
func VerifyCiphertext(r io.Reader, m *Manifest, key *keys.FirmwareKey, dst io.Writer) error {
	return verifyCiphertext(r, m, key, dst)
}

// DeltaRecordSize is the bytes a delta record takes in a bundle.
func DeltaRecordSize(e *Envelope, m *Manifest) int64 {
	return int64(HeaderSize+len(e.ManifestBytes)+len(e.Signature)) + m.CiphertextSize
}
