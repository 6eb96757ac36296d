package bundle

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"

	"github.com/ecowatt/fota/keys"
)

// streamBuffer is the fixed working memory of the streaming ciphers: large
// enough to amortise calls into the AES assembly, small enough for a device.
const streamBuffer = 32 << 10

// Decrypter decrypts AES-256-CBC ciphertext fed to Write in pieces of any
// size, as they arrive from a network, and writes the plaintext to dst. Its
// memory is constant: one work buffer, whatever the image size. The last
// block is held back until Close, which removes and checks the PKCS#7 padding.
type Decrypter struct {
	mode    cipher.BlockMode
	dst     io.Writer
	buf     []byte
	pending int                 // ciphertext bytes in buf not yet decrypted
	written int64               // plaintext bytes written to dst
	chain   [aes.BlockSize]byte // CBC chaining value for buf[0]: the ciphertext block before it
	err     error
}

// DecrypterState is what a Decrypter needs to continue after a power cut:
// the CBC chaining value, the ciphertext it holds back, and how much
// plaintext it wrote. It is a few dozen bytes, whatever the image size.
type DecrypterState struct {
	IV      [aes.BlockSize]byte
	Pending []byte // at most 31 bytes of ciphertext not yet decrypted
	Written int64
}

// NewDecrypter returns a Decrypter for key and the 16-byte iv.
func NewDecrypter(dst io.Writer, key keys.FirmwareKey, iv []byte) (*Decrypter, error) {
	if len(iv) != aes.BlockSize {
		return nil, fmt.Errorf("%w: IV is %d bytes, want %d", ErrDecrypt, len(iv), aes.BlockSize)
	}
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	d := &Decrypter{mode: cipher.NewCBCDecrypter(block, iv), dst: dst, buf: make([]byte, streamBuffer)}
	copy(d.chain[:], iv)
	return d, nil
}

// Checkpoint returns the state to persist so that ResumeDecrypter can go on
// from exactly this point of the ciphertext stream.
func (d *Decrypter) Checkpoint() DecrypterState {
	return DecrypterState{IV: d.chain, Pending: append([]byte(nil), d.buf[:d.pending]...), Written: d.written}
}

// ResumeDecrypter continues a stream from a Checkpoint: the plaintext it
// writes to dst follows the st.Written bytes written before.
func ResumeDecrypter(dst io.Writer, key keys.FirmwareKey, st DecrypterState) (*Decrypter, error) {
	if len(st.Pending) >= 2*aes.BlockSize || st.Written < 0 || st.Written%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: checkpoint is inconsistent (%d pending bytes, %d written)", ErrDecrypt, len(st.Pending), st.Written)
	}
	d, err := NewDecrypter(dst, key, st.IV[:])
	if err != nil {
		return nil, err
	}
	d.written = st.Written
	// Fewer than two blocks never produce output, so this only refills the buffer.
	d.pending = copy(d.buf, st.Pending)
	return d, nil
}

// Write consumes ciphertext. It returns the first error of dst, and every
// later call returns it too.
func (d *Decrypter) Write(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	consumed := 0
	for len(p) > 0 {
		k := copy(d.buf[d.pending:], p)
		d.pending += k
		p = p[k:]
		consumed += k
		// Hold back the last whole block: it may be the padded one.
		ready := d.pending/aes.BlockSize*aes.BlockSize - aes.BlockSize
		if ready <= 0 {
			continue
		}
		var next [aes.BlockSize]byte
		copy(next[:], d.buf[ready-aes.BlockSize:ready]) // decryption overwrites it in place
		d.mode.CryptBlocks(d.buf[:ready], d.buf[:ready])
		d.chain = next
		if _, err := d.dst.Write(d.buf[:ready]); err != nil {
			d.err = fmt.Errorf("write plaintext: %w", err)
			return consumed, d.err
		}
		d.written += int64(ready)
		d.pending = copy(d.buf, d.buf[ready:d.pending])
	}
	return consumed, nil
}

// Close decrypts the held-back block, checks and strips the padding and
// writes the rest. It fails if the ciphertext was not a whole, non-zero
// number of blocks or the padding is wrong (a wrong key, almost always).
func (d *Decrypter) Close() error {
	if d.err != nil {
		return d.err
	}
	if d.pending != aes.BlockSize {
		if d.pending == 0 && d.written == 0 {
			return fmt.Errorf("%w: no ciphertext", ErrDecrypt)
		}
		return fmt.Errorf("%w: ciphertext is not a whole number of %d-byte blocks", ErrDecrypt, aes.BlockSize)
	}
	last := d.buf[:aes.BlockSize]
	d.mode.CryptBlocks(last, last)
	n, err := unpad(last)
	if err != nil {
		d.err = err
		return err
	}
	if _, err := d.dst.Write(last[:n]); err != nil {
		d.err = fmt.Errorf("write plaintext: %w", err)
		return d.err
	}
	d.written += int64(n)
	d.pending = 0
	d.err = errors.New("decrypter is closed")
	return nil
}

// Written is the number of plaintext bytes written to dst so far.
func (d *Decrypter) Written() int64 { return d.written }

// unpad returns how many bytes of the final block are plaintext. The check
// runs in constant time so that timing does not reveal padding validity.
func unpad(block []byte) (int, error) {
	p := int(block[len(block)-1])
	good := subtle.ConstantTimeLessOrEq(1, p) & subtle.ConstantTimeLessOrEq(p, aes.BlockSize)
	for i := 0; i < aes.BlockSize; i++ {
		inPad := subtle.ConstantTimeLessOrEq(aes.BlockSize-p, i)
		match := subtle.ConstantTimeByteEq(block[i], byte(p))
		good &= subtle.ConstantTimeSelect(inPad, match, 1)
	}
	if good != 1 {
		return 0, fmt.Errorf("%w: bad padding (wrong firmware key?)", ErrDecrypt)
	}
	return aes.BlockSize - p, nil
}
