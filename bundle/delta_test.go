package bundle

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/ecowatt/fota/keys"
)

// withDeltas is rel's bundle with a delta record per patch appended, each
// claiming the base named by the same index.
func withDeltas(t *testing.T, rel *testRelease, patches [][]byte) ([]byte, []*Manifest) {
	t.Helper()
	out := bytes.NewBuffer(append([]byte(nil), rel.bundle...))
	var ms []*Manifest
	for i, p := range patches {
		base := sha256.Sum256([]byte{byte(i)})
		m, err := WriteDelta(out, rel.manifest, p, DeltaOptions{BaseVersion: "1.0." + string(rune('0'+i)), BaseSize: 1000 + int64(i),
			BaseSHA256: base, Compression: "heatshrink"}, rel.signer, rel.fwKey)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	return out.Bytes(), ms
}

// readAll verifies a bundle with deltas as the server's publish does,
// returning the decrypted patches.
func readAll(b []byte, pub *keys.PublicKey, fw *keys.FirmwareKey) ([][]byte, error) {
	r := bytes.NewReader(b)
	env, err := ReadEnvelope(r)
	if err != nil {
		return nil, err
	}
	full, err := env.Verify(pub)
	if err != nil {
		return nil, err
	}
	if err := VerifyCiphertext(r, full, fw, nil); err != nil {
		return nil, err
	}
	var patches [][]byte
	var bases []string
	for {
		denv, err := ReadDelta(r)
		if errors.Is(err, io.EOF) {
			return patches, nil
		}
		if err != nil {
			return patches, err
		}
		m, err := denv.VerifyDelta(full, bases, pub)
		if err != nil {
			return patches, err
		}
		bases = append(bases, m.BaseSHA256)
		var p bytes.Buffer
		if err := VerifyCiphertext(r, m, fw, &p); err != nil {
			return patches, err
		}
		patches = append(patches, p.Bytes())
	}
}

func TestDeltaRecordsRoundTrip(t *testing.T) {
	rel := newTestRelease(t, keys.AlgEd25519, 5000)
	want := [][]byte{bytes.Repeat([]byte("p"), 1), make([]byte, 16), make([]byte, 4097)}
	rand.Read(want[2])
	b, ms := withDeltas(t, rel, want)
	got, err := readAll(b, rel.signer.Public(), &rel.fwKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("read %d patches, wrote %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("patch %d differs", i)
		}
		m := ms[i]
		if m.Kind != KindDelta || m.PatchSize != int64(len(want[i])) || m.CiphertextSize != paddedSize(int64(len(want[i]))) ||
			m.PlaintextSHA256 != rel.manifest.PlaintextSHA256 || m.PlaintextSize != rel.manifest.PlaintextSize || m.IV == rel.manifest.IV {
			t.Errorf("delta manifest %d: %+v", i, m)
		}
	}
	// A bundle with deltas is refused by the check that a bundle ends
	// after its payload: older readers say so rather than ignore them.
	if _, _, err := open(b, rel.signer.Public(), &rel.fwKey); !errors.Is(err, ErrTrailingData) {
		t.Fatalf("VerifyPayload on a bundle with deltas: %v", err)
	}
	// A full manifest never carries delta fields, so older devices read
	// full manifests as before.
	if strings.Contains(string(mustJSON(t, rel.manifest)), "kind") {
		t.Fatal("a full manifest names a kind")
	}
}

func mustJSON(t *testing.T, m *Manifest) []byte {
	b, err := jsonMarshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDeltaRecordsRefused(t *testing.T) {
	rel := newTestRelease(t, keys.AlgEd25519, 3000)
	one, _ := withDeltas(t, rel, [][]byte{[]byte("patch bytes")})
	deltaAt := len(rel.bundle)
	other := newTestRelease(t, keys.AlgEd25519, 3000)

	// Sign a delta manifest changed by edit with rel's key.
	resigned := func(edit func(m map[string]any)) []byte {
		r := bytes.NewReader(one[deltaAt:])
		env, err := ReadDelta(r)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(env.ManifestBytes, &m); err != nil {
			t.Fatal(err)
		}
		edit(m)
		mb, _ := json.Marshal(m)
		sig, err := rel.signer.Sign(mb)
		if err != nil {
			t.Fatal(err)
		}
		ct, _ := io.ReadAll(r)
		hdr := header{manifestLen: uint32(len(mb)), signatureLen: uint16(len(sig))}.marshal()
		copy(hdr, DeltaMagic)
		return bytes.Join([][]byte{rel.bundle, hdr, mb, sig, ct}, nil)
	}
	twice := func() []byte {
		b := bytes.NewBuffer(append([]byte(nil), one...))
		if _, err := WriteDelta(b, rel.manifest, []byte("again"), DeltaOptions{BaseVersion: "1.0.0", BaseSize: 1000,
			BaseSHA256: sha256.Sum256([]byte{0}), Compression: "heatshrink"}, rel.signer, rel.fwKey); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	otherDelta := func() []byte {
		b := bytes.NewBuffer(nil)
		if _, err := WriteDelta(b, other.manifest, []byte("patch"), DeltaOptions{BaseVersion: "1.0.0", BaseSize: 1000,
			BaseSHA256: sha256.Sum256([]byte{9}), Compression: "crle"}, other.signer, other.fwKey); err != nil {
			t.Fatal(err)
		}
		return append(append([]byte(nil), rel.bundle...), b.Bytes()...)
	}
	cases := []struct {
		name   string
		bundle []byte
		want   error
		text   string
	}{
		{"garbage after the payload", append(append([]byte(nil), rel.bundle...), "junk and more junk"...), ErrTrailingData, "delta record"},
		{"truncated delta header", one[:deltaAt+7], ErrTruncated, "delta header"},
		{"truncated delta ciphertext", one[:len(one)-1], ErrTruncated, ""},
		{"flipped delta ciphertext", flip(one, len(one)-3), ErrCiphertextHash, ""},
		{"flipped delta manifest", flip(one, deltaAt+HeaderSize+20), ErrSignature, ""},
		{"delta signed by another key", otherDelta(), ErrUntrustedKey, ""},
		{"two deltas from one base", twice(), ErrMalformed, "two deltas"},
		{"delta of another version", resigned(func(m map[string]any) { m["version"] = "9.9.9" }), ErrMalformed, "not the release"},
		{"delta of another image", resigned(func(m map[string]any) { m["plaintext_sha256"] = strings.Repeat("ab", 32) }), ErrMalformed, "not the release"},
		{"delta with a higher counter", resigned(func(m map[string]any) { m["security_counter"] = 99 }), ErrMalformed, "not the release"},
		{"delta without kind", resigned(func(m map[string]any) { delete(m, "kind") }), ErrMalformed, "delta fields"},
		{"unknown kind", resigned(func(m map[string]any) { m["kind"] = "xdelta" }), ErrMalformed, "kind"},
		{"unknown compression", resigned(func(m map[string]any) { m["compression"] = "lzma" }), ErrMalformed, "compression"},
		{"bad base digest", resigned(func(m map[string]any) { m["base_sha256"] = "00" }), ErrMalformed, "base_sha256"},
		{"patch size against ciphertext", resigned(func(m map[string]any) { m["patch_size"] = 64 }), ErrMalformed, "patch_size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := readAll(c.bundle, rel.signer.Public(), &rel.fwKey)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("got %v, want %v mentioning %q", err, c.want, c.text)
			}
		})
	}
	// A delta manifest is never a release manifest: verifying it as one
	// (what a device that asked for the full image does) fails on kind
	// before anything else would be believed.
	r := bytes.NewReader(one[deltaAt:])
	env, _ := ReadDelta(r)
	m, err := env.Verify(rel.signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	if m.Kind != KindDelta || m.CheckDeltaOf(m) == nil {
		t.Fatal("a delta manifest passed as its own release")
	}
}

func TestWriteDeltaChecksItsManifest(t *testing.T) {
	rel := newTestRelease(t, keys.AlgEd25519, 100)
	var b bytes.Buffer
	if _, err := WriteDelta(&b, rel.manifest, []byte("p"), DeltaOptions{BaseVersion: "not-a-version", BaseSize: 10, Compression: "heatshrink"},
		rel.signer, rel.fwKey); err == nil || !strings.Contains(err.Error(), "base_version") {
		t.Fatalf("bad base version: %v", err)
	}
	if _, err := WriteDelta(&b, rel.manifest, nil, DeltaOptions{BaseVersion: "1.0.0", BaseSize: 10, Compression: "heatshrink"},
		rel.signer, rel.fwKey); err == nil || !strings.Contains(err.Error(), "patch_size") {
		t.Fatalf("empty patch: %v", err)
	}
	if b.Len() != 0 {
		t.Fatalf("a refused delta wrote %d bytes", b.Len())
	}
}
