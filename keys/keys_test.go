package keys

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSignVerifyEachAlgorithm(t *testing.T) {
	for _, alg := range Algorithms {
		t.Run(alg, func(t *testing.T) {
			k, err := Generate(alg, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			other, _ := Generate(alg, rand.Reader)
			msg := []byte("manifest bytes")
			sig, err := k.Sign(msg)
			if err != nil {
				t.Fatal(err)
			}
			if err := k.Public().Verify(msg, sig); err != nil {
				t.Fatalf("own signature: %v", err)
			}
			if err := other.Public().Verify(msg, sig); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("other key: %v, want ErrBadSignature", err)
			}
			if err := k.Public().Verify([]byte("manifest bytez"), sig); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("changed message: %v, want ErrBadSignature", err)
			}

			// PEM round trips keep the key and its id.
			privPEM, err := k.MarshalPrivatePEM()
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseSigningKey(privPEM)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := ParsePublicKey(k.Public().PEM())
			if err != nil {
				t.Fatal(err)
			}
			if back.Public().ID() != k.Public().ID() || pub.ID() != k.Public().ID() || pub.Alg() != alg {
				t.Fatal("key id or algorithm changed across PEM round trip")
			}
			if len(pub.ID()) != 16 {
				t.Fatalf("key id %q is not 16 hex characters", pub.ID())
			}
		})
	}
}

func TestLegacyDigestSignature(t *testing.T) {
	k, _ := Generate(AlgRSA, rand.Reader)
	digest := sha256.Sum256([]byte("firmware"))
	sig, err := k.SignDigest(digest)
	if err != nil {
		t.Fatal(err)
	}
	if len(sig) != 256 {
		t.Fatalf("RSA-2048 signature is %d bytes", len(sig))
	}
	if err := k.Public().VerifyDigest(digest, sig); err != nil {
		t.Fatal(err)
	}
	digest[0] ^= 1
	if err := k.Public().VerifyDigest(digest, sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("changed digest: %v", err)
	}
	ed, _ := Generate(AlgEd25519, rand.Reader)
	if _, err := ed.SignDigest(digest); !errors.Is(err, ErrUnsupportedKey) {
		t.Fatalf("ed25519 legacy signature: %v, want ErrUnsupportedKey", err)
	}
}

func TestParseRejects(t *testing.T) {
	if _, err := ParsePublicKey([]byte("not pem")); err == nil {
		t.Error("garbage public key accepted")
	}
	k, _ := Generate(AlgECDSA, rand.Reader)
	priv, _ := k.MarshalPrivatePEM()
	if _, err := ParsePublicKey(priv); err == nil || !strings.Contains(err.Error(), "want \"PUBLIC KEY\"") {
		t.Errorf("private key given as public: %v", err)
	}
	if _, err := ParseSigningKey(k.Public().PEM()); err == nil {
		t.Error("public key accepted as signing key")
	}
	broken := bytes.Replace(priv, []byte("PRIVATE KEY-----\n"), []byte("PRIVATE KEY-----\nAAAA"), 1)
	if _, err := ParseSigningKey(broken); err == nil {
		t.Error("corrupt private key accepted")
	}
}

func TestFirmwareKeyFormats(t *testing.T) {
	raw := bytes.Repeat([]byte{0xAB}, 32)
	hexForm := []byte(strings.Repeat("ab", 32) + "\n")
	for name, data := range map[string][]byte{"raw": raw, "hex": hexForm} {
		k, err := ParseFirmwareKey(data)
		if err != nil || !bytes.Equal(k[:], raw) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, bad := range [][]byte{nil, raw[:31], append(raw, 0), []byte(strings.Repeat("zz", 32))} {
		if _, err := ParseFirmwareKey(bad); err == nil {
			t.Errorf("accepted %d-byte key", len(bad))
		}
	}
}

func TestSecretsRedacted(t *testing.T) {
	var fw FirmwareKey
	copy(fw[:], bytes.Repeat([]byte{0x42}, 32))
	k, _ := Generate(AlgEd25519, rand.Reader)
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("keys", "firmware_key", fw, "signing_key", k)
	printed := fmt.Sprintf("%v %s %+v", fw, fw, k) + logged.String()
	// Look for the key as hex, as decimal bytes and as raw bytes ("BBBB"); a
	// lone "42" would also match the log line's timestamp.
	leaks := []string{"4242", "42 42", "0x42", "66 66", "BBBB", "private"}
	for _, leak := range leaks {
		if strings.Contains(strings.ToLower(printed), strings.ToLower(leak)) {
			t.Fatalf("secret material printed (%q): %s", leak, printed)
		}
	}
}

func TestInitWritesFilesWithModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	res, err := Init(dir, AlgRSA, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{SigningKeyFile: 0o600, PublicKeyFile: 0o644, FirmwareKeyFile: 0o600, HeaderFile: 0o600}
	for name, mode := range want {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s has mode %04o, want %04o", name, st.Mode().Perm(), mode)
		}
	}
	sk, err := LoadSigningKey(filepath.Join(dir, SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	pk, err := LoadPublicKey(filepath.Join(dir, PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if sk.Public().ID() != res.Public.ID() || pk.ID() != res.Public.ID() {
		t.Fatal("loaded keys do not match the generated ones")
	}
	if _, err := LoadFirmwareKey(filepath.Join(dir, FirmwareKeyFile)); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Fatalf("key folder holds %d entries, want 4 (temporary files left behind?)", len(entries))
	}
}

func TestInitRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	// Only one of the four exists: nothing may be written at all.
	existing := filepath.Join(dir, FirmwareKeyFile)
	if err := os.WriteFile(existing, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Init(dir, AlgEd25519, false, nil)
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("Init over an existing key: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("refused Init left %d files, want only the existing one", len(entries))
	}
	if got, _ := os.ReadFile(existing); string(got) != "precious" {
		t.Fatal("existing key was changed")
	}
	if _, err := Init(dir, AlgEd25519, true, nil); err != nil {
		t.Fatalf("Init with force: %v", err)
	}
	if got, _ := os.ReadFile(existing); len(got) != 32 {
		t.Fatal("force did not replace the key")
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadPublicKey(filepath.Join(dir, "missing.pub")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big.key")
	os.WriteFile(big, make([]byte, maxKeyFile+10), 0o600)
	if _, err := LoadSigningKey(big); err == nil || !strings.Contains(err.Error(), "not a key file") {
		t.Errorf("oversized key file: %v", err)
	}
}

func TestPermissionWarning(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "signing.key")
	os.WriteFile(p, []byte("x"), 0o600)
	if w := PermissionWarning(p); w != "" {
		t.Errorf("0600 file warned: %s", w)
	}
	os.Chmod(p, 0o644)
	if w := PermissionWarning(p); !strings.Contains(w, "chmod 600") {
		t.Errorf("0644 file not warned: %q", w)
	}
}

// TestHeaderCompiles builds keys.h with the C compiler and checks that the
// constants a device build sees are exactly the keys.
func TestHeaderCompiles(t *testing.T) {
	cc := requireTool(t, "cc")
	dir := t.TempDir()
	if _, err := Init(dir, AlgRSA, false, nil); err != nil {
		t.Fatal(err)
	}
	extra := []CDefinition{{Name: "TRICKY", String: "quote\" back\\slash ??= \x01 tab\t"}}
	pub, _ := LoadPublicKey(filepath.Join(dir, PublicKeyFile))
	fw, _ := LoadFirmwareKey(filepath.Join(dir, FirmwareKeyFile))
	os.WriteFile(filepath.Join(dir, HeaderFile), DeviceHeader(pub, fw, extra), 0o600)
	prog := `#include <stdio.h>
#include <string.h>
#include "keys.h"
int main(void) {
	fputs(SERVER_PUBLIC_KEY, stdout);
	if (sizeof(SERVER_PUBLIC_KEY) != strlen(SERVER_PUBLIC_KEY) + 1) return 3;
	for (unsigned i = 0; i < sizeof(AES_FIRMWARE_KEY); i++) printf("%02x", AES_FIRMWARE_KEY[i]);
	printf("\n%s\n%s", SIGNING_KEY_ID, TRICKY);
	return 0;
}
`
	os.WriteFile(filepath.Join(dir, "main.c"), []byte(prog), 0o644)
	out, err := exec.Command(cc, "-std=c99", "-Wall", "-Werror", "-o", filepath.Join(dir, "prog"), filepath.Join(dir, "main.c")).CombinedOutput()
	if err != nil {
		t.Fatalf("keys.h does not compile: %v\n%s", err, out)
	}
	got, err := exec.Command(filepath.Join(dir, "prog")).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := string(pub.PEM()) + hex.EncodeToString(fw[:]) + "\n" + pub.ID() + "\n" + extra[0].String
	if string(got) != want {
		t.Fatalf("compiled header printed\n%q\nwant\n%q", got, want)
	}
}

// requireTool finds an external program. CI installs every tool the tests
// use, so there a missing one fails; elsewhere the test says what to install.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed; .ci/run must install it", name)
	}
	t.Skipf("%s is not installed; install it to run this check", name)
	return ""
}

func TestParseDeviceHeaderRoundTrip(t *testing.T) {
	k, _ := Generate(AlgRSA, rand.Reader)
	var fw FirmwareKey
	rand.Read(fw[:])
	h := DeviceHeader(k.Public(), fw, []CDefinition{
		{Name: "DEVICE_ID", String: "ESP32_EcoWatt_Smart"},
		{Name: "HMAC_PSK", String: strings.Repeat("ab", 32)},
		{Name: "OTA_SERVER_URL", String: "http://127.0.0.1:8080"},
	})
	got, err := ParseDeviceHeader(h)
	if err != nil {
		t.Fatal(err)
	}
	if got.DeviceID != "ESP32_EcoWatt_Smart" || got.HMACPSK != strings.Repeat("ab", 32) || got.ServerURL != "http://127.0.0.1:8080" ||
		got.FirmwareKey != fw || got.PublicKey.ID() != k.Public().ID() {
		t.Fatalf("parsed %+v", got)
	}
	for name, bad := range map[string][]byte{
		"no public key":   bytes.Replace(h, []byte("SERVER_PUBLIC_KEY"), []byte("OTHER_KEY"), 1),
		"no firmware key": bytes.Replace(h, []byte("AES_FIRMWARE_KEY"), []byte("OTHER_BYTES"), 1),
		"short key":       bytes.Replace(h, []byte("[32]"), []byte("[31]"), 1),
		"empty":           nil,
	} {
		if _, err := ParseDeviceHeader(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if s, err := cUnquote(`a\"b\\c\?\001\nX`); err != nil || s != "a\"b\\c?\x01\nX" {
		t.Errorf("cUnquote: %q %v", s, err)
	}
}
