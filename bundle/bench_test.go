package bundle

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/ecowatt/fota/keys"
)

var benchSizes = []int{1 << 20, 16 << 20}

// BenchmarkBaseline is the yardstick for build and verify: one SHA-256 and
// one AES-256-CBC pass over the same bytes, in the same 32 KiB pieces, with
// nothing else. Build and verify each aim for at least 70% of its MB/s.
func BenchmarkBaseline(b *testing.B) {
	for _, size := range benchSizes {
		data := make([]byte, size)
		rand.Read(data)
		block, _ := aes.NewCipher(make([]byte, 32))
		for _, dir := range []string{"encrypt", "decrypt"} {
			b.Run(fmt.Sprintf("%s/%dMiB", dir, size>>20), func(b *testing.B) {
				b.SetBytes(int64(size))
				buf := make([]byte, streamBuffer)
				for b.Loop() {
					h := sha256.New()
					var mode cipher.BlockMode
					if dir == "encrypt" {
						mode = cipher.NewCBCEncrypter(block, make([]byte, 16))
					} else {
						mode = cipher.NewCBCDecrypter(block, make([]byte, 16))
					}
					for off := 0; off < size; off += len(buf) {
						n := copy(buf, data[off:])
						mode.CryptBlocks(buf[:n], buf[:n])
						h.Write(buf[:n])
					}
					h.Sum(nil)
				}
			})
		}
	}
}

// BenchmarkBuild measures a whole release build from an in-memory image to
// a bundle file, as `fota release build` does: both signatures (RSA-2048,
// the default) and the ciphertext spool file included.
func BenchmarkBuild(b *testing.B) {
	signer, _ := keys.Generate(keys.AlgRSA, rand.Reader)
	tmp := b.TempDir()
	out, err := os.Create(filepath.Join(tmp, "bench.fota"))
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	// 64 MiB shows that memory does not grow with the image (B/op).
	for _, size := range append(benchSizes, 64<<20) {
		fw := make([]byte, size)
		rand.Read(fw)
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := out.Seek(0, io.SeekStart); err != nil {
					b.Fatal(err)
				}
				if _, err := Build(out, bytes.NewReader(fw), BuildOptions{
					Product: "p", Hardware: "esp32", Version: "1.0.0", Signer: signer, TempDir: tmp,
				}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyDecrypt measures `fota release verify` with the firmware
// key: envelope, signature, ciphertext hash, streaming decrypt, plaintext hash.
func BenchmarkVerifyDecrypt(b *testing.B) {
	for _, size := range benchSizes {
		rel := newTestRelease(b, keys.AlgRSA, size)
		pub := rel.signer.Public()
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				r := bytes.NewReader(rel.bundle)
				env, err := ReadEnvelope(r)
				if err != nil {
					b.Fatal(err)
				}
				m, err := env.Verify(pub)
				if err != nil {
					b.Fatal(err)
				}
				if err := VerifyPayload(r, m, &rel.fwKey, io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
