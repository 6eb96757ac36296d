// Package keys makes, stores and loads the two secrets of a release
// engineer and the public key every device and server trusts.
//
// Who holds what:
//   - The signing private key stays with the release engineer (or their CI).
//     It signs each release manifest. Neither the server nor a device has it.
//   - The signing public key is given to the server (to refuse bundles that
//     were not signed by it) and compiled into device builds (to refuse
//     firmware that was not signed by it, even if the server is compromised).
//   - The firmware key (AES-256) encrypts firmware so that a copy of a bundle
//     taken from the server or the wire reveals nothing. The release engineer
//     and devices hold it; the server never does.
//
// Private material is written with mode 0600 and never printed: the types
// that carry it redact themselves in logs and format strings.
package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
)

// Signature algorithms, as named in manifests and on the command line.
const (
	AlgRSA     = "rsa-2048"   // RSA PKCS#1 v1.5 with SHA-256; the ESP32 default
	AlgECDSA   = "ecdsa-p256" // ECDSA P-256 with SHA-256, ASN.1 signature
	AlgEd25519 = "ed25519"    // pure Ed25519
)

// Algorithms lists the accepted algorithm names, default first.
var Algorithms = []string{AlgRSA, AlgECDSA, AlgEd25519}

// FirmwareKeySize is the size of the AES-256 firmware key in bytes.
const FirmwareKeySize = 32

var (
	// ErrUnsupportedKey is returned for key types and sizes fota does not sign with.
	ErrUnsupportedKey = errors.New("unsupported key")
	// ErrBadSignature is returned when a signature does not verify.
	ErrBadSignature = errors.New("signature does not match key")
)

// SigningKey is a release signing private key.
type SigningKey struct {
	alg    string
	signer crypto.Signer
}

// PublicKey is a release signing public key.
type PublicKey struct {
	alg string
	key crypto.PublicKey
	der []byte // PKIX DER, from which the key id is derived
}

// FirmwareKey is the fleet's AES-256 firmware key.
type FirmwareKey [FirmwareKeySize]byte

// String keeps the key out of any formatted output.
func (FirmwareKey) String() string { return "REDACTED" }

// LogValue keeps the key out of structured logs.
func (FirmwareKey) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// String keeps the key out of any formatted output.
func (*SigningKey) String() string { return "REDACTED" }

// LogValue keeps the key out of structured logs.
func (*SigningKey) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// Generate makes a new signing key of the named algorithm using random.
func Generate(alg string, random io.Reader) (*SigningKey, error) {
	var signer crypto.Signer
	var err error
	switch alg {
	case AlgRSA:
		signer, err = rsa.GenerateKey(random, 2048)
	case AlgECDSA:
		signer, err = ecdsa.GenerateKey(elliptic.P256(), random)
	case AlgEd25519:
		_, signer, err = ed25519.GenerateKey(random)
	default:
		return nil, fmt.Errorf("%w: algorithm %q (want one of %v)", ErrUnsupportedKey, alg, Algorithms)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", alg, err)
	}
	return &SigningKey{alg: alg, signer: signer}, nil
}

// NewFirmwareKey returns 32 random bytes.
func NewFirmwareKey(random io.Reader) (FirmwareKey, error) {
	var k FirmwareKey
	if _, err := io.ReadFull(random, k[:]); err != nil {
		return k, fmt.Errorf("generate firmware key: %w", err)
	}
	return k, nil
}

// Alg returns the key's algorithm name.
func (k *SigningKey) Alg() string { return k.alg }

// Public returns the matching public key.
func (k *SigningKey) Public() *PublicKey {
	pub, err := newPublicKey(k.signer.Public())
	if err != nil {
		// A SigningKey is only ever built from a supported type.
		panic(err)
	}
	return pub
}

// SignatureSize returns the length of every signature this key makes, or
// false when it varies (ECDSA's ASN.1 encoding).
func (k *SigningKey) SignatureSize() (int, bool) {
	switch p := k.signer.Public().(type) {
	case *rsa.PublicKey:
		return p.Size(), true
	case ed25519.PublicKey:
		return ed25519.SignatureSize, true
	}
	return 0, false
}

// Sign signs msg: RSA PKCS#1 v1.5 and ECDSA over its SHA-256, Ed25519 over msg itself.
func (k *SigningKey) Sign(msg []byte) ([]byte, error) {
	var sig []byte
	var err error
	switch k.alg {
	case AlgEd25519:
		sig, err = k.signer.Sign(nil, msg, crypto.Hash(0))
	case AlgECDSA:
		digest := sha256.Sum256(msg)
		sig, err = ecdsa.SignASN1(rand.Reader, k.signer.(*ecdsa.PrivateKey), digest[:])
	default:
		digest := sha256.Sum256(msg)
		sig, err = k.signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	}
	if err != nil {
		return nil, fmt.Errorf("sign with %s key: %w", k.alg, err)
	}
	return sig, nil
}

// SignDigest makes the signature the original EcoWatt ESP32 client checks:
// RSA PKCS#1 v1.5 over an already computed SHA-256 digest. Only RSA keys can.
func (k *SigningKey) SignDigest(digest [sha256.Size]byte) ([]byte, error) {
	if k.alg != AlgRSA {
		return nil, fmt.Errorf("%w: the legacy signature needs an RSA key, not %s", ErrUnsupportedKey, k.alg)
	}
	sig, err := k.signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("sign digest: %w", err)
	}
	return sig, nil
}

func newPublicKey(pub crypto.PublicKey) (*PublicKey, error) {
	var alg string
	switch p := pub.(type) {
	case *rsa.PublicKey:
		// 2048 is what the ESP32 fleet uses; larger keys are accepted for
		// gateways, smaller ones are too weak to trust.
		if bits := p.N.BitLen(); bits < 2048 || bits > 4096 {
			return nil, fmt.Errorf("%w: RSA key of %d bits (want 2048 to 4096)", ErrUnsupportedKey, bits)
		}
		alg = AlgRSA
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ECDSA curve %s (want P-256)", ErrUnsupportedKey, p.Curve.Params().Name)
		}
		alg = AlgECDSA
	case ed25519.PublicKey:
		alg = AlgEd25519
	default:
		return nil, fmt.Errorf("%w: key type %T", ErrUnsupportedKey, pub)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return &PublicKey{alg: alg, key: pub, der: der}, nil
}

// Alg returns the key's algorithm name.
func (p *PublicKey) Alg() string { return p.alg }

// ID is the key id: the first 8 bytes of the SHA-256 of the PKIX DER
// encoding, in hex. It names keys in manifests and messages; it is not secret.
func (p *PublicKey) ID() string {
	sum := sha256.Sum256(p.der)
	return hex.EncodeToString(sum[:8])
}

// PEM returns the key as a PKIX "PUBLIC KEY" PEM block, as mbedtls parses it.
func (p *PublicKey) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: p.der})
}

// Verify checks sig over msg, as Sign made it.
func (p *PublicKey) Verify(msg, sig []byte) error {
	ok := false
	switch k := p.key.(type) {
	case *rsa.PublicKey:
		digest := sha256.Sum256(msg)
		ok = rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) == nil
	case *ecdsa.PublicKey:
		digest := sha256.Sum256(msg)
		ok = ecdsa.VerifyASN1(k, digest[:], sig)
	case ed25519.PublicKey:
		ok = ed25519.Verify(k, msg, sig)
	}
	if !ok {
		return fmt.Errorf("%w %s", ErrBadSignature, p.ID())
	}
	return nil
}

// VerifyDigest checks a legacy signature made by SignDigest.
func (p *PublicKey) VerifyDigest(digest [sha256.Size]byte, sig []byte) error {
	k, ok := p.key.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("%w: the legacy signature needs an RSA key, not %s", ErrUnsupportedKey, p.alg)
	}
	if rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) != nil {
		return fmt.Errorf("legacy %w %s", ErrBadSignature, p.ID())
	}
	return nil
}

// MarshalPrivatePEM encodes the key as a PKCS#8 "PRIVATE KEY" PEM block.
func (k *SigningKey) MarshalPrivatePEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.signer)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseSigningKey parses a PKCS#8 PEM private key (or a PKCS#1 RSA one, as
// openssl genrsa writes).
func ParseSigningKey(data []byte) (*SigningKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found (want a PKCS#8 \"PRIVATE KEY\")")
	}
	var parsed any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		parsed, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block is %q, want \"PRIVATE KEY\"", block.Type)
	}
	if err != nil {
		// The parser's message can quote key bytes; keep it out.
		return nil, errors.New("private key is malformed")
	}
	signer, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: key type %T", ErrUnsupportedKey, parsed)
	}
	pub, err := newPublicKey(signer.Public())
	if err != nil {
		return nil, err
	}
	return &SigningKey{alg: pub.alg, signer: signer}, nil
}

// ParsePublicKey parses a PKIX "PUBLIC KEY" PEM block.
func ParsePublicKey(data []byte) (*PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found (want a \"PUBLIC KEY\")")
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("PEM block is %q, want \"PUBLIC KEY\"", block.Type)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key is malformed: %w", err)
	}
	return newPublicKey(pub)
}

// ParseFirmwareKey accepts the key file's content: 32 raw bytes, or 64 hex
// characters (with an optional trailing newline) for keys kept in text stores.
func ParseFirmwareKey(data []byte) (FirmwareKey, error) {
	var k FirmwareKey
	switch {
	case len(data) == FirmwareKeySize:
		copy(k[:], data)
		return k, nil
	case len(data) == 2*FirmwareKeySize || len(data) == 2*FirmwareKeySize+1 && data[len(data)-1] == '\n':
		if _, err := hex.Decode(k[:], data[:2*FirmwareKeySize]); err == nil {
			return k, nil
		}
	}
	return k, fmt.Errorf("firmware key must be %d raw bytes or %d hex characters, this is %d bytes", FirmwareKeySize, 2*FirmwareKeySize, len(data))
}
