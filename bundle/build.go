package bundle

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"github.com/ecowatt/fota/keys"
)

// BuildOptions describe the release to build.
type BuildOptions struct {
	Product         string
	Hardware        string
	Version         string
	SecurityCounter uint32
	ChunkSize       int // DefaultChunkSize when 0
	Notes           string
	Created         time.Time // now when zero
	// IV is the CBC initialisation vector. Leave it nil: a fresh random IV per
	// release is what keeps two releases from sharing a keystream prefix.
	// Test vectors set it to be reproducible.
	IV []byte

	Signer      *keys.SigningKey
	FirmwareKey keys.FirmwareKey
	// TempDir holds the encrypted payload while the manifest is made; the
	// default is os.TempDir. It needs room for one ciphertext.
	TempDir string
}

// Build reads firmware, encrypts it and writes a signed bundle to dst. It
// reads the firmware once and keeps memory constant: the ciphertext is
// spooled to a temporary file because the manifest, which precedes it,
// holds its digest. The result's manifest is returned.
func Build(dst io.Writer, firmware io.Reader, opts BuildOptions) (*Manifest, error) {
	if opts.Signer == nil {
		return nil, errors.New("build bundle: no signing key")
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.Created.IsZero() {
		opts.Created = time.Now()
	}
	iv := opts.IV
	if iv == nil {
		iv = make([]byte, 16)
		if _, err := rand.Read(iv); err != nil {
			return nil, fmt.Errorf("build bundle: make IV: %w", err)
		}
	}
	if len(iv) != 16 {
		return nil, fmt.Errorf("build bundle: IV is %d bytes, want 16", len(iv))
	}
	// Check the options before the expensive pass.
	m := &Manifest{
		Format: FormatVersion, Product: opts.Product, Hardware: opts.Hardware, Version: opts.Version,
		SecurityCounter: opts.SecurityCounter, Cipher: CipherAES256CBC, IV: hex.EncodeToString(iv),
		ChunkSize: opts.ChunkSize, Created: opts.Created.UTC().Truncate(time.Second),
		KeyID: opts.Signer.Public().ID(), SignatureAlg: opts.Signer.Alg(), Notes: opts.Notes,
		// Placeholders that pass validation; the real values are set below.
		PlaintextSize: 1, CiphertextSize: 16, PlaintextSHA256: zeroDigest, CiphertextSHA256: zeroDigest,
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("build bundle: %w", err)
	}

	spool, err := os.CreateTemp(opts.TempDir, "fota-payload-*")
	if err != nil {
		return nil, fmt.Errorf("build bundle: spool ciphertext: %w", err)
	}
	defer func() {
		spool.Close()
		os.Remove(spool.Name())
	}()

	// Hashing and spooling run on other goroutines while this one encrypts:
	// AES-CBC encryption is serial, so it sets the pace.
	ptHash, ctHash := sha256.New(), sha256.New()
	ctCount := &countingWriter{}
	spoolBuf := bufio.NewWriterSize(spool, streamBuffer)
	ptSink := newAsyncWriter(ptHash)
	ctSink := newAsyncWriter(io.MultiWriter(ctHash, ctCount, spoolBuf))
	enc, err := newEncrypter(ctSink, opts.FirmwareKey, iv)
	if err != nil {
		ptSink.Close()
		ctSink.Close()
		return nil, fmt.Errorf("build bundle: %w", err)
	}
	ptSize, err := io.Copy(io.MultiWriter(ptSink, enc), io.LimitReader(firmware, MaxFirmwareSize+1))
	if err == nil {
		err = enc.Close()
	}
	ptErr, ctErr := ptSink.Close(), ctSink.Close()
	switch {
	case err != nil:
		return nil, fmt.Errorf("build bundle: read firmware: %w", err)
	case ptErr != nil || ctErr != nil:
		return nil, fmt.Errorf("build bundle: spool ciphertext: %w", errors.Join(ptErr, ctErr))
	case ptSize == 0:
		return nil, fmt.Errorf("build bundle: %w: firmware is empty", ErrMalformed)
	case ptSize > MaxFirmwareSize:
		return nil, fmt.Errorf("build bundle: %w: firmware is larger than %d bytes", ErrTooLarge, MaxFirmwareSize)
	}
	if err := spoolBuf.Flush(); err != nil {
		return nil, fmt.Errorf("build bundle: spool ciphertext: %w", err)
	}
	ptDigest, ctDigest := ptHash.Sum(nil), ctHash.Sum(nil)

	m.PlaintextSize, m.CiphertextSize = ptSize, ctCount.n
	m.PlaintextSHA256 = hex.EncodeToString(ptDigest)
	m.CiphertextSHA256 = hex.EncodeToString(ctDigest)
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("build bundle: %w", err)
	}
	manifestBytes, err := jsonMarshal(m)
	if err != nil {
		return nil, fmt.Errorf("build bundle: encode manifest: %w", err)
	}
	// An RSA signature costs about a millisecond: make the two at once.
	var legacy []byte
	legacyErr := make(chan error, 1)
	if opts.Signer.Alg() == keys.AlgRSA {
		go func() {
			var err error
			legacy, err = opts.Signer.SignDigest(m.PlaintextDigest())
			legacyErr <- err
		}()
	} else {
		legacyErr <- nil
	}
	sig, err := opts.Signer.Sign(manifestBytes)
	if lerr := <-legacyErr; err == nil {
		err = lerr
	}
	if err != nil {
		return nil, fmt.Errorf("build bundle: %w", err)
	}
	hdr := header{manifestLen: uint32(len(manifestBytes)), signatureLen: uint16(len(sig)), legacyLen: uint16(len(legacy))}
	for _, part := range [][]byte{hdr.marshal(), manifestBytes, sig, legacy} {
		if _, err := dst.Write(part); err != nil {
			return nil, fmt.Errorf("build bundle: write: %w", err)
		}
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("build bundle: rewind spool: %w", err)
	}
	if _, err := io.Copy(dst, spool); err != nil {
		return nil, fmt.Errorf("build bundle: write ciphertext: %w", err)
	}
	return m, nil
}

// jsonMarshal encodes a manifest the one way fota writes it: indented, so
// `head -c` of a bundle is readable, and with HTML escaping off.
func jsonMarshal(m *Manifest) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

const zeroDigest = "0000000000000000000000000000000000000000000000000000000000000000"

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// VerifyPayload reads the ciphertext that follows an envelope from r and
// checks it against the verified manifest m: exactly CiphertextSize bytes,
// then end of file, with the signed SHA-256. Given the firmware key it also
// decrypts as it reads, writing plaintext to dst (which may be nil), and
// checks plaintext size and SHA-256. dst receives bytes before the checks
// finish: write it somewhere temporary and keep it only if this returns nil.
func VerifyPayload(r io.Reader, m *Manifest, key *keys.FirmwareKey, dst io.Writer) error {
	// The ciphertext digest is computed on another goroutine while this one
	// decrypts and hashes the plaintext.
	ctHash := sha256.New()
	ctSink := newAsyncWriter(ctHash)
	ctClosed := false
	defer func() {
		if !ctClosed {
			ctSink.Close()
		}
	}()
	var sink io.Writer = ctSink
	var dec *Decrypter
	var ptHash hash.Hash
	if key != nil {
		ptHash = sha256.New()
		out := io.Writer(ptHash)
		if dst != nil {
			out = io.MultiWriter(dst, ptHash)
		}
		var err error
		if dec, err = NewDecrypter(out, *key, m.IVBytes()); err != nil {
			return err
		}
		sink = io.MultiWriter(ctSink, dec)
	}
	n, err := io.Copy(sink, io.LimitReader(r, m.CiphertextSize))
	if err != nil {
		return fmt.Errorf("read ciphertext: %w", err)
	}
	if n < m.CiphertextSize {
		return fmt.Errorf("%w: ciphertext is %d bytes, manifest says %d", ErrTruncated, n, m.CiphertextSize)
	}
	var one [1]byte
	if k, _ := io.ReadFull(r, one[:]); k > 0 {
		return ErrTrailingData
	}
	ctClosed = true
	if err := ctSink.Close(); err != nil {
		return err
	}
	if got := hex.EncodeToString(ctHash.Sum(nil)); got != m.CiphertextSHA256 {
		return fmt.Errorf("%w: got %s, manifest says %s", ErrCiphertextHash, got, m.CiphertextSHA256)
	}
	if dec == nil {
		return nil
	}
	if err := dec.Close(); err != nil {
		return err
	}
	if dec.Written() != m.PlaintextSize {
		return fmt.Errorf("%w: decrypted %d bytes, manifest says %d", ErrPlaintextSize, dec.Written(), m.PlaintextSize)
	}
	if got := hex.EncodeToString(ptHash.Sum(nil)); got != m.PlaintextSHA256 {
		return fmt.Errorf("%w: got %s, manifest says %s (wrong firmware key?)", ErrPlaintextHash, got, m.PlaintextSHA256)
	}
	return nil
}
