package bundle

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota/keys"
)

// testRelease is a key set and a built bundle shared by the tests here.
type testRelease struct {
	signer   *keys.SigningKey
	fwKey    keys.FirmwareKey
	firmware []byte
	bundle   []byte
	manifest *Manifest
}

func newTestRelease(t testing.TB, alg string, size int) *testRelease {
	t.Helper()
	signer, err := keys.Generate(alg, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fwKey, _ := keys.NewFirmwareKey(rand.Reader)
	firmware := make([]byte, size)
	rand.Read(firmware)
	var out bytes.Buffer
	m, err := Build(&out, bytes.NewReader(firmware), BuildOptions{
		Product: "ecowatt", Hardware: "esp32", Version: "1.0.4", SecurityCounter: 2,
		Signer: signer, FirmwareKey: fwKey, TempDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &testRelease{signer: signer, fwKey: fwKey, firmware: firmware, bundle: out.Bytes(), manifest: m}
}

// open verifies b completely, as `fota release verify` with a firmware key does.
func open(b []byte, pub *keys.PublicKey, fw *keys.FirmwareKey) ([]byte, *Manifest, error) {
	r := bytes.NewReader(b)
	env, err := ReadEnvelope(r)
	if err != nil {
		return nil, nil, err
	}
	m, err := env.Verify(pub)
	if err != nil {
		return nil, nil, err
	}
	var plain bytes.Buffer
	if err := VerifyPayload(r, m, fw, &plain); err != nil {
		return nil, m, err
	}
	return plain.Bytes(), m, nil
}

func TestBuildVerifyRoundTrip(t *testing.T) {
	for _, alg := range keys.Algorithms {
		for _, size := range []int{1, 15, 16, 17, 1024, 100_000} {
			rel := newTestRelease(t, alg, size)
			plain, m, err := open(rel.bundle, rel.signer.Public(), &rel.fwKey)
			if err != nil {
				t.Fatalf("%s size %d: %v", alg, size, err)
			}
			if !bytes.Equal(plain, rel.firmware) {
				t.Fatalf("%s size %d: decrypted firmware differs", alg, size)
			}
			if m.PlaintextSize != int64(size) || m.CiphertextSize != paddedSize(int64(size)) || m.SecurityCounter != 2 {
				t.Fatalf("manifest %+v", m)
			}
			if sum := sha256.Sum256(rel.firmware); m.PlaintextSHA256 != hex.EncodeToString(sum[:]) {
				t.Fatal("plaintext digest wrong")
			}
			env, _ := ReadEnvelope(bytes.NewReader(rel.bundle))
			if (env.LegacySignature != nil) != (alg == keys.AlgRSA) {
				t.Fatalf("%s: legacy signature present = %v", alg, env.LegacySignature != nil)
			}
			wantChunks := (int(m.CiphertextSize) + 1023) / 1024
			if m.Chunks() != wantChunks {
				t.Fatalf("Chunks() = %d, want %d", m.Chunks(), wantChunks)
			}
		}
	}
}

func TestFreshIVPerRelease(t *testing.T) {
	a := newTestRelease(t, keys.AlgEd25519, 64)
	b := newTestRelease(t, keys.AlgEd25519, 64)
	if a.manifest.IV == b.manifest.IV {
		t.Fatal("two releases share an IV")
	}
}

// Every bit of a bundle matters: flipping any one must make verification fail.
func TestEveryFlippedBitIsCaught(t *testing.T) {
	rel := newTestRelease(t, keys.AlgEd25519, 200)
	pub := rel.signer.Public()
	for i := range rel.bundle {
		for bit := 0; bit < 8; bit++ {
			b := bytes.Clone(rel.bundle)
			b[i] ^= 1 << bit
			if _, _, err := open(b, pub, &rel.fwKey); err == nil {
				t.Fatalf("flipping bit %d of byte %d went unnoticed", bit, i)
			}
		}
	}
}

// A bundle cut at any length is refused as truncated, never half-accepted.
func TestEveryTruncationIsCaught(t *testing.T) {
	rel := newTestRelease(t, keys.AlgEd25519, 300)
	pub := rel.signer.Public()
	for n := 0; n < len(rel.bundle); n++ {
		_, _, err := open(rel.bundle[:n], pub, &rel.fwKey)
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("bundle cut to %d of %d bytes: %v, want ErrTruncated", n, len(rel.bundle), err)
		}
	}
}

func TestVerifyErrors(t *testing.T) {
	rel := newTestRelease(t, keys.AlgRSA, 5000)
	pub := rel.signer.Public()
	other, _ := keys.Generate(keys.AlgRSA, rand.Reader)
	wrongFW, _ := keys.NewFirmwareKey(rand.Reader)
	payloadAt := len(rel.bundle) - int(rel.manifest.CiphertextSize)

	cases := []struct {
		name string
		b    []byte
		pub  *keys.PublicKey
		fw   *keys.FirmwareKey
		want error
		msg  string
	}{
		{"wrong public key", rel.bundle, other.Public(), &rel.fwKey, ErrUntrustedKey, "signed by key"},
		{"wrong firmware key", rel.bundle, pub, &wrongFW, nil, "wrong firmware key"},
		{"trailing byte", append(bytes.Clone(rel.bundle), 0), pub, &rel.fwKey, ErrTrailingData, ""},
		{"ciphertext bit", flip(rel.bundle, payloadAt+100), pub, nil, ErrCiphertextHash, "ciphertext sha256 mismatch"},
		{"manifest bit", flip(rel.bundle, HeaderSize+20), pub, nil, ErrSignature, "signature does not match key"},
		{"not a bundle", []byte("ELF binary, not a bundle at all"), pub, nil, ErrMalformed, "not a fota bundle"},
		{"future format", setHeader(rel.bundle, 5, 2), pub, nil, ErrUnsupportedVersion, "upgrade fota"},
		{"huge manifest length", setHeader(rel.bundle, 8, 0x40), pub, nil, ErrTooLarge, "limit"},
		{"flags set", setHeader(rel.bundle, 7, 1), pub, nil, ErrMalformed, "flags"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := open(c.b, c.pub, c.fw)
			if err == nil {
				t.Fatal("verification passed")
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %q does not say %q", err, c.msg)
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

func setHeader(b []byte, i int, v byte) []byte {
	c := bytes.Clone(b)
	c[i] = v
	return c
}

// Manifests signed by the right key but describing something wrong: only a
// holder of the signing key can make these, and the payload checks still
// refuse them.
func TestSignedButInconsistentManifests(t *testing.T) {
	rel := newTestRelease(t, keys.AlgRSA, 3000)
	env, _ := ReadEnvelope(bytes.NewReader(rel.bundle))
	payload := rel.bundle[env.PayloadOffset():]
	resign := func(change func(m *Manifest, legacy *[]byte)) []byte {
		m := *rel.manifest
		legacy := env.LegacySignature
		change(&m, &legacy)
		mb, _ := jsonMarshal(&m)
		sig, _ := rel.signer.Sign(mb)
		var out bytes.Buffer
		out.Write(header{manifestLen: uint32(len(mb)), signatureLen: uint16(len(sig)), legacyLen: uint16(len(legacy))}.marshal())
		out.Write(mb)
		out.Write(sig)
		out.Write(legacy)
		out.Write(payload)
		return out.Bytes()
	}
	otherDigest := strings.Repeat("ab", 32)
	cases := []struct {
		name   string
		change func(m *Manifest, legacy *[]byte)
		want   error
	}{
		{"plaintext hash", func(m *Manifest, l *[]byte) { m.PlaintextSHA256 = otherDigest; *l = nil }, ErrPlaintextHash},
		{"legacy signature over another digest", func(m *Manifest, _ *[]byte) { m.PlaintextSHA256 = otherDigest }, ErrSignature},
		{"legacy signature corrupted", func(_ *Manifest, l *[]byte) { *l = flip(*l, 10) }, ErrSignature},
		{"plaintext size", func(m *Manifest, _ *[]byte) { m.PlaintextSize-- }, ErrPlaintextSize},
		{"oversized", func(m *Manifest, _ *[]byte) {
			m.PlaintextSize = MaxFirmwareSize + 1
			m.CiphertextSize = paddedSize(m.PlaintextSize)
		}, ErrTooLarge},
		{"bad version", func(m *Manifest, _ *[]byte) { m.Version = "1.0" }, ErrMalformed},
		{"bad chunk size", func(m *Manifest, _ *[]byte) { m.ChunkSize = 1000 }, ErrMalformed},
		{"unknown cipher", func(m *Manifest, _ *[]byte) { m.Cipher = "aes-128-ctr" }, ErrMalformed},
		{"algorithm mismatch", func(m *Manifest, l *[]byte) { m.SignatureAlg = keys.AlgEd25519; *l = nil }, ErrMalformed},
		{"format 2", func(m *Manifest, _ *[]byte) { m.Format = 2 }, ErrUnsupportedVersion},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := open(resign(c.change), rel.signer.Public(), &rel.fwKey)
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
		})
	}
}

func TestBuildRejects(t *testing.T) {
	signer, _ := keys.Generate(keys.AlgEd25519, rand.Reader)
	good := BuildOptions{Product: "p", Hardware: "esp32", Version: "1.0.0", Signer: signer, TempDir: t.TempDir()}
	cases := []struct {
		name     string
		firmware []byte
		change   func(o *BuildOptions)
		msg      string
	}{
		{"empty firmware", nil, func(*BuildOptions) {}, "firmware is empty"},
		{"non-semver", []byte("x"), func(o *BuildOptions) { o.Version = "v1.0" }, "not a semantic version"},
		{"no key", []byte("x"), func(o *BuildOptions) { o.Signer = nil }, "no signing key"},
		{"odd chunk size", []byte("x"), func(o *BuildOptions) { o.ChunkSize = 1000 }, "chunk_size"},
		{"hardware with slash", []byte("x"), func(o *BuildOptions) { o.Hardware = "../esp32" }, "hardware"},
		{"short IV", []byte("x"), func(o *BuildOptions) { o.IV = []byte{1, 2} }, "IV"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := good
			c.change(&o)
			var out bytes.Buffer
			_, err := Build(&out, bytes.NewReader(c.firmware), o)
			if err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %v, want one saying %q", err, c.msg)
			}
			if out.Len() != 0 {
				t.Fatalf("a refused build wrote %d bytes", out.Len())
			}
		})
	}
}

// The decrypter must produce the same plaintext whatever sizes the
// ciphertext arrives in: one byte at a time, odd sizes, chunk sized, whole.
func TestDecrypterAnySplit(t *testing.T) {
	rel := newTestRelease(t, keys.AlgEd25519, 70_001)
	env, _ := ReadEnvelope(bytes.NewReader(rel.bundle))
	ct := rel.bundle[env.PayloadOffset():]
	for _, step := range []int{1, 7, 16, 17, 1024, 33_000, len(ct)} {
		var plain bytes.Buffer
		d, err := NewDecrypter(&plain, rel.fwKey, rel.manifest.IVBytes())
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(ct); off += step {
			end := min(off+step, len(ct))
			if _, err := d.Write(ct[off:end]); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Close(); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if !bytes.Equal(plain.Bytes(), rel.firmware) {
			t.Fatalf("step %d: plaintext differs", step)
		}
	}
}

func TestDecrypterRejectsPartialBlocks(t *testing.T) {
	var key keys.FirmwareKey
	d, _ := NewDecrypter(io.Discard, key, make([]byte, 16))
	d.Write(make([]byte, 20))
	if err := d.Close(); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("20-byte ciphertext: %v", err)
	}
	d, _ = NewDecrypter(io.Discard, key, make([]byte, 16))
	if err := d.Close(); !errors.Is(err, ErrDecrypt) || !strings.Contains(err.Error(), "no ciphertext") {
		t.Fatalf("empty ciphertext: %v", err)
	}
}

func TestUnpad(t *testing.T) {
	for p := 0; p <= 17; p++ {
		block := make([]byte, 16)
		for i := range block {
			block[i] = 0xAA
		}
		for i := 16 - min(p, 16); i < 16; i++ {
			block[i] = byte(p)
		}
		n, err := unpad(block)
		if valid := p >= 1 && p <= 16; valid != (err == nil) || valid && n != 16-p {
			t.Errorf("pad %d: n=%d err=%v", p, n, err)
		}
	}
	bad := bytes.Repeat([]byte{4}, 16)
	bad[13] = 3
	if _, err := unpad(bad); err == nil {
		t.Error("inconsistent padding accepted")
	}
}

func TestCreatedIsUTCSeconds(t *testing.T) {
	signer, _ := keys.Generate(keys.AlgEd25519, rand.Reader)
	at := time.Date(2026, 11, 27, 10, 0, 0, 123, time.FixedZone("X", 3600))
	m, err := Build(io.Discard, strings.NewReader("fw"), BuildOptions{Product: "p", Hardware: "h", Version: "1.0.0", Signer: signer, Created: at, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if m.Created.Location() != time.UTC || m.Created.Nanosecond() != 0 || !m.Created.Equal(at.Truncate(time.Second)) {
		t.Fatalf("created = %v", m.Created)
	}
}

// A decrypter checkpointed at any point and resumed in a new one writes
// exactly the plaintext an uninterrupted one does.
func TestDecrypterCheckpointResume(t *testing.T) {
	rel := newTestRelease(t, keys.AlgEd25519, 50_000)
	env, _ := ReadEnvelope(bytes.NewReader(rel.bundle))
	ct := rel.bundle[env.PayloadOffset():]
	for _, cut := range []int{0, 1, 15, 16, 17, 31, 32, 1024, 1040, 33_000, len(ct) - 16, len(ct) - 1} {
		var plain bytes.Buffer
		d, _ := NewDecrypter(&plain, rel.fwKey, rel.manifest.IVBytes())
		for off := 0; off < cut; off += 1000 {
			d.Write(ct[off:min(off+1000, cut)])
		}
		st := d.Checkpoint()
		if int64(plain.Len()) != st.Written {
			t.Fatalf("cut %d: checkpoint says %d written, %d were", cut, st.Written, plain.Len())
		}
		// Only the state crosses the "reboot"; the plaintext so far is on flash.
		r, err := ResumeDecrypter(&plain, rel.fwKey, st)
		if err != nil {
			t.Fatal(err)
		}
		r.Write(ct[cut:])
		if err := r.Close(); err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if !bytes.Equal(plain.Bytes(), rel.firmware) {
			t.Fatalf("cut %d: plaintext differs after resume", cut)
		}
	}
	if _, err := ResumeDecrypter(io.Discard, rel.fwKey, DecrypterState{Pending: make([]byte, 40)}); err == nil {
		t.Fatal("inconsistent checkpoint accepted")
	}
}

// Building into a file (ciphertext written in place) and into a stream
// (ciphertext spooled) give the same bytes, at any starting offset.
func TestBuildInPlaceMatchesSpooled(t *testing.T) {
	created := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for _, alg := range keys.Algorithms {
		signer, _ := keys.Generate(alg, rand.Reader)
		fwKey, _ := keys.NewFirmwareKey(rand.Reader)
		for _, size := range []int{1, 16, 5000, 300_000} {
			fw := make([]byte, size)
			rand.Read(fw)
			opts := BuildOptions{Product: "p", Hardware: "esp32", Version: "1.0.0", Signer: signer, FirmwareKey: fwKey,
				IV: bytes.Repeat([]byte{7}, 16), Created: created, TempDir: t.TempDir()}
			var spooled bytes.Buffer
			if _, err := Build(&spooled, bytes.NewReader(fw), opts); err != nil {
				t.Fatal(err)
			}
			f, err := os.Create(filepath.Join(t.TempDir(), "b.fota"))
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte("prefix"))
			if _, err := Build(f, bytes.NewReader(fw), opts); err != nil {
				t.Fatal(err)
			}
			pos, _ := f.Seek(0, io.SeekCurrent)
			f.Close()
			got, _ := os.ReadFile(f.Name())
			if pos != int64(len(got)) || string(got[:6]) != "prefix" {
				t.Fatalf("%s/%d: file position %d of %d", alg, size, pos, len(got))
			}
			got = got[6:]
			if alg == keys.AlgECDSA {
				// Random signatures: compare what is deterministic, and that it verifies.
				if _, _, err := open(got, signer.Public(), &fwKey); err != nil {
					t.Fatalf("ecdsa/%d: %v", size, err)
				}
				continue
			}
			if !bytes.Equal(got, spooled.Bytes()) {
				t.Fatalf("%s/%d: in-place bundle differs from the spooled one", alg, size)
			}
		}
	}
}
