package bundle

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/ecowatt/fota/keys"
)

// cipherPair is one block of plaintext and its ciphertext, handed from the
// encrypting goroutine to the hashing one. Both arrays have room for a
// block of padding.
type cipherPair struct {
	pt, ct       [asyncBufferSize + aes.BlockSize]byte
	ptLen, ctLen int
}

// cipherPairs recycles the pairs: a server or a benchmark building many
// bundles would otherwise allocate and zero them each time.
var cipherPairs = sync.Pool{New: func() any { return new(cipherPair) }}

// encryptStream reads r to its end and encrypts it with AES-256-CBC and
// PKCS#7 padding, returning the plaintext size. It reads each block of
// plaintext straight into a buffer and encrypts it into another; a second
// goroutine hashes both into ptHash and ctHash and writes the ciphertext to
// out. Encryption is serial and sets the pace; two hashes and a write fit
// beside it on the second core, and two busy goroutines on two cores do not
// take turns the way three do. Memory is constant: asyncBuffers pairs.
func encryptStream(r io.Reader, key keys.FirmwareKey, iv []byte, ptHash, ctHash hash.Hash, out io.Writer) (int64, error) {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return 0, fmt.Errorf("encrypt: %w", err)
	}
	mode := cipher.NewCBCEncrypter(block, iv)

	work := make(chan *cipherPair, asyncBuffers)
	free := make(chan *cipherPair, asyncBuffers)
	failed := make(chan struct{}) // closed when out fails: stop reading
	var writeErr error            // set by the helper before failed is closed
	done := make(chan struct{})
	for range asyncBuffers {
		free <- cipherPairs.Get().(*cipherPair)
	}
	go func() {
		defer close(done)
		for p := range work {
			if writeErr == nil {
				ptHash.Write(p.pt[:p.ptLen])
				ctHash.Write(p.ct[:p.ctLen])
				if _, err := out.Write(p.ct[:p.ctLen]); err != nil {
					writeErr = fmt.Errorf("write ciphertext: %w", err)
					close(failed)
				}
			}
			free <- p
		}
	}()

	var size int64
	var readErr error
	for {
		// A failed write stops the reading at once: a select with both
		// ready picks at random, and the helper keeps freeing buffers.
		var p *cipherPair
		select {
		case <-failed:
		default:
			select {
			case p = <-free:
			case <-failed:
			}
		}
		if p == nil {
			break
		}
		n, err := io.ReadFull(r, p.pt[:asyncBufferSize])
		size += int64(n)
		last := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
		if err != nil && !last {
			free <- p
			readErr = err
			break
		}
		p.ptLen, p.ctLen = n, n
		if last {
			// A whole block of padding when the plaintext is block
			// aligned, as PKCS#7 requires.
			pad := aes.BlockSize - n%aes.BlockSize
			for i := range pad {
				p.pt[n+i] = byte(pad)
			}
			p.ctLen = n + pad
		}
		mode.CryptBlocks(p.ct[:p.ctLen], p.pt[:p.ctLen])
		work <- p
		if last {
			break
		}
	}
	close(work)
	<-done
	for range asyncBuffers {
		cipherPairs.Put(<-free)
	}
	switch {
	case readErr != nil:
		return size, fmt.Errorf("read firmware: %w", readErr)
	case writeErr != nil:
		return size, writeErr
	}
	return size, nil
}
