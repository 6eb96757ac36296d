package bundle

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"

	"github.com/ecowatt/fota/keys"
)

// FuzzOpen feeds arbitrary bytes through the whole reader: envelope,
// signature check, manifest parse and payload check. Nothing may panic or
// allocate beyond the limits, and nothing but the real bundle may verify.
// The corpus in testdata/fuzz/FuzzOpen replays on every test run.
func FuzzOpen(f *testing.F) {
	if seeds, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzOpen", "*")); len(seeds) == 0 {
		f.Fatal("seed corpus testdata/fuzz/FuzzOpen is empty")
	}
	pub, err := keys.LoadPublicKey(filepath.Join(vectorDir, "signing.pub"))
	if err != nil {
		f.Fatal(err)
	}
	fw, err := keys.LoadFirmwareKey(filepath.Join(vectorDir, "firmware.key"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		env, err := ReadEnvelope(r)
		if err != nil {
			return
		}
		if m, err := env.Unverified(); err == nil && m.Chunks() <= 0 {
			t.Fatalf("valid manifest with %d chunks", m.Chunks())
		}
		m, err := env.Verify(pub)
		if err != nil {
			return
		}
		_ = VerifyPayload(r, m, &fw, io.Discard)
	})
}

// FuzzParseManifest checks that any manifest the parser accepts satisfies
// its own validation and round trips.
func FuzzParseManifest(f *testing.F) {
	if seeds, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzParseManifest", "*")); len(seeds) == 0 {
		f.Fatal("seed corpus testdata/fuzz/FuzzParseManifest is empty")
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		again, err := jsonMarshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseManifest(again); err != nil {
			t.Fatalf("re-encoded manifest fails: %v", err)
		}
	})
}
