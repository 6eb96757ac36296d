package bundle

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"

	"github.com/ecowatt/fota/keys"
)

// TestEncryptStreamMatchesOneShot checks the pipelined encryption against
// AES-256-CBC with PKCS#7 done in one piece, at sizes around the hand-off
// buffer's, where a block of padding or a short last buffer is easy to lose.
func TestEncryptStreamMatchesOneShot(t *testing.T) {
	var key keys.FirmwareKey
	for i := range key {
		key[i] = byte(i)
	}
	iv := bytes.Repeat([]byte{7}, 16)
	for _, size := range []int{1, 15, 16, 17, asyncBufferSize - 1, asyncBufferSize, asyncBufferSize + 1, 3*asyncBufferSize + 5, 4 * asyncBufferSize} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			pt := make([]byte, size)
			for i := range pt {
				pt[i] = byte(i * 31)
			}
			pad := aes.BlockSize - size%aes.BlockSize
			want := append(bytes.Clone(pt), bytes.Repeat([]byte{byte(pad)}, pad)...)
			block, _ := aes.NewCipher(key[:])
			cipher.NewCBCEncrypter(block, iv).CryptBlocks(want, want)

			var out bytes.Buffer
			ptHash, ctHash := sha256.New(), sha256.New()
			n, err := encryptStream(bytes.NewReader(pt), key, iv, ptHash, ctHash, &out)
			if err != nil || n != int64(size) {
				t.Fatalf("encryptStream = %d, %v; want %d, nil", n, err, size)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("ciphertext differs from one-shot AES-256-CBC (%d bytes, want %d)", out.Len(), len(want))
			}
			if got, want := ptHash.Sum(nil), sha256.Sum256(pt); !bytes.Equal(got, want[:]) {
				t.Error("plaintext hash covers the wrong bytes (the padding?)")
			}
			if got, want := ctHash.Sum(nil), sha256.Sum256(want); !bytes.Equal(got, want[:]) {
				t.Error("ciphertext hash differs from the ciphertext's")
			}
		})
	}
}

type failingWriter struct{ after int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after -= len(p); w.after < 0 {
		return 0, errors.New("no space left on device")
	}
	return len(p), nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestEncryptStreamStopsOnWriteError: a full disk ends the build with the
// disk's error, without reading the rest of a large image first.
func TestEncryptStreamStopsOnWriteError(t *testing.T) {
	const size = 64 << 20
	in := &countingReader{r: io.LimitReader(zeroReader{}, size)}
	_, err := encryptStream(in, keys.FirmwareKey{}, make([]byte, 16), sha256.New(), sha256.New(), &failingWriter{after: asyncBufferSize})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("no space left on device")) {
		t.Fatalf("err = %v, want the write error", err)
	}
	if in.n > 8*asyncBufferSize {
		t.Errorf("read %d bytes after the output failed; want to stop within a few buffers", in.n)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestEncryptStreamReadError: a failing input is reported as a read error.
func TestEncryptStreamReadError(t *testing.T) {
	in := io.MultiReader(bytes.NewReader(make([]byte, 1000)), iotest.ErrReader(errors.New("input/output error")))
	_, err := encryptStream(in, keys.FirmwareKey{}, make([]byte, 16), sha256.New(), sha256.New(), io.Discard)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("read firmware: input/output error")) {
		t.Fatalf("err = %v, want a read firmware error", err)
	}
}
