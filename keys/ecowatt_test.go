package keys

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ecowatt/fota/protocol"
)

// ecoWattInputs makes an RSA-2048 key, a firmware key and a device PSK.
func ecoWattInputs(t *testing.T) (*PublicKey, FirmwareKey, protocol.PSK) {
	t.Helper()
	k, err := Generate(AlgRSA, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fw, err := NewFirmwareKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	psk, err := protocol.NewPSK()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public(), fw, psk
}

var (
	cppPEM  = regexp.MustCompile(`(?m)^const char\* SERVER_PUBLIC_KEY =((?:\s*"(?:[^"\\]|\\.)*")+);$`)
	cppAES  = regexp.MustCompile(`(?m)^const uint8_t AES_FIRMWARE_KEY\[32\] = \{([^}]*)\};$`)
	cppPSK  = regexp.MustCompile(`(?m)^const char\* HMAC_PSK = "((?:[^"\\]|\\.)*)";$`)
	cppByte = regexp.MustCompile(`0x([0-9a-f]{2})`)
)

// parseEcoWattSource reads the three values back out of a rendered keys.cpp.
func parseEcoWattSource(t *testing.T, src []byte) (pemText string, aes []byte, psk string) {
	t.Helper()
	m := cppPEM.FindSubmatch(src)
	if m == nil {
		t.Fatalf("keys.cpp has no SERVER_PUBLIC_KEY definition:\n%s", src)
	}
	for _, lit := range cLiteral.FindAllSubmatch(m[1], -1) {
		s, err := cUnquote(string(lit[1]))
		if err != nil {
			t.Fatal(err)
		}
		pemText += s
	}
	m = cppAES.FindSubmatch(src)
	if m == nil {
		t.Fatalf("keys.cpp has no AES_FIRMWARE_KEY definition:\n%s", src)
	}
	for _, b := range cppByte.FindAllSubmatch(m[1], -1) {
		v, _ := hex.DecodeString(string(b[1]))
		aes = append(aes, v...)
	}
	m = cppPSK.FindSubmatch(src)
	if m == nil {
		t.Fatalf("keys.cpp has no HMAC_PSK definition:\n%s", src)
	}
	psk, err := cUnquote(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	return pemText, aes, psk
}

func TestEcoWattKeyFilesLayout(t *testing.T) {
	pub, fw, psk := ecoWattInputs(t)
	header, source, err := EcoWattKeyFiles(pub, fw, psk)
	if err != nil {
		t.Fatal(err)
	}
	h := string(header)
	// The lines the original project's code and keys.cpp rely on, in order.
	want := []string{
		"#ifndef OTA_KEYS_H",
		"#define OTA_KEYS_H",
		"#include <stdint.h>",
		"extern const char* SERVER_PUBLIC_KEY;",
		"extern const uint8_t AES_FIRMWARE_KEY[32];",
		"extern const char* HMAC_PSK;",
		"#define RSA_KEY_SIZE 2048",
		"#define AES_KEY_SIZE 256",
		"#define HMAC_PSK_SIZE 64",
		"#endif // OTA_KEYS_H",
	}
	var code []string
	for _, l := range strings.Split(h, "\n") {
		if strings.HasPrefix(l, "#") || strings.HasPrefix(l, "extern") || strings.HasPrefix(l, "static") || strings.HasPrefix(l, "const") {
			code = append(code, l)
		}
	}
	if strings.Join(code, "\n") != strings.Join(want, "\n") {
		t.Fatalf("keys.h code lines:\n%s\nwant:\n%s", strings.Join(code, "\n"), strings.Join(want, "\n"))
	}
	if !strings.HasSuffix(h, "#endif // OTA_KEYS_H\n") {
		t.Fatal("keys.h does not end with its #endif")
	}
	if bytes.Contains(header, []byte(psk.Hex())) || bytes.Contains(header, []byte("0x")) {
		t.Fatal("keys.h holds a key value; values belong in keys.cpp")
	}

	src := string(source)
	if !strings.Contains(src, "\n#include \"application/keys.h\"\n") {
		t.Fatalf("keys.cpp does not include application/keys.h:\n%s", src)
	}
	if strings.Contains(src, "static") {
		t.Fatal("keys.cpp defines static objects; the firmware's other files could not see them")
	}
	pemText, aes, pskText := parseEcoWattSource(t, source)
	back, err := ParsePublicKey([]byte(pemText))
	if err != nil {
		t.Fatalf("SERVER_PUBLIC_KEY does not parse back: %v\n%s", err, pemText)
	}
	if pemText != string(pub.PEM()) || back.ID() != pub.ID() {
		t.Fatalf("SERVER_PUBLIC_KEY is key %s, want %s", back.ID(), pub.ID())
	}
	if !bytes.Equal(aes, fw[:]) {
		t.Fatalf("AES_FIRMWARE_KEY is %x, want %x", aes, fw[:])
	}
	if pskText != psk.Hex() {
		t.Fatalf("HMAC_PSK is %q, want %q", pskText, psk.Hex())
	}
	// The firmware keys its HMAC with strlen(HMAC_PSK) bytes of the string:
	// that must give the HMAC the server's /ota/chunk sends.
	m := hmac.New(sha256.New, []byte(pskText))
	m.Write([]byte("chunk bytes7"))
	if got, want := m.Sum(nil), protocol.LegacyChunkMAC(psk, 7, []byte("chunk bytes")); !bytes.Equal(got, want[:]) {
		t.Fatalf("firmware HMAC with HMAC_PSK is %x, the server's is %x", got, want)
	}
}

func TestEcoWattRefusesOtherKeys(t *testing.T) {
	_, fw, psk := ecoWattInputs(t)
	rsa3072, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	big, err := newPublicKey(&rsa3072.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ec, _ := Generate(AlgECDSA, rand.Reader)
	ed, _ := Generate(AlgEd25519, rand.Reader)
	for name, c := range map[string]struct {
		pub  *PublicKey
		says string
	}{
		"ecdsa-p256": {ec.Public(), "is ecdsa-p256"},
		"ed25519":    {ed.Public(), "is ed25519"},
		"rsa-3072":   {big, "has 3072 bits"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := EcoWattKeyFiles(c.pub, fw, psk)
			if !errors.Is(err, ErrUnsupportedKey) || !strings.Contains(err.Error(), "RSA-2048 signatures only") || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("got %v, want an unsupported-key error that says the firmware needs RSA-2048 and the key %s", err, c.says)
			}
			dir := t.TempDir()
			if _, err := WriteEcoWattKeyFiles(dir, c.pub, fw, psk, false); !errors.Is(err, ErrUnsupportedKey) {
				t.Fatalf("write: got %v, want ErrUnsupportedKey", err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("a refused key left %d entries in the folder", len(entries))
			}
		})
	}
}

func TestWriteEcoWattKeyFiles(t *testing.T) {
	pub, fw, psk := ecoWattInputs(t)
	dir := t.TempDir()
	header, source, _ := EcoWattKeyFiles(pub, fw, psk)
	paths, err := WriteEcoWattKeyFiles(dir, pub, fw, psk, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "include", "application", "keys.h"), filepath.Join(dir, "src", "application", "keys.cpp")}
	if strings.Join(paths, " ") != strings.Join(want, " ") {
		t.Fatalf("wrote %q, want %q", paths, want)
	}
	for i, data := range [][]byte{header, source} {
		st, err := os.Stat(want[i])
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != PrivateMode {
			t.Errorf("%s has mode %04o, want 0600", want[i], st.Mode().Perm())
		}
		if got, _ := os.ReadFile(want[i]); !bytes.Equal(got, data) {
			t.Errorf("%s differs from what EcoWattKeyFiles renders", want[i])
		}
	}

	// Another device's keys must not replace these without force.
	_, _, other := ecoWattInputs(t)
	if _, err := WriteEcoWattKeyFiles(dir, pub, fw, other, false); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second write: got %v, want ErrExists with a --force hint", err)
	}
	if got, _ := os.ReadFile(want[1]); !bytes.Equal(got, source) {
		t.Fatal("a refused write changed keys.cpp")
	}

	// A project that has only keys.cpp (the original's) gets no keys.h either.
	proj := t.TempDir()
	os.MkdirAll(filepath.Join(proj, "src", "application"), 0o755)
	orig := []byte("// the original keys.cpp\n")
	os.WriteFile(filepath.Join(proj, "src", "application", "keys.cpp"), orig, 0o644)
	if _, err := WriteEcoWattKeyFiles(proj, pub, fw, psk, false); !errors.Is(err, ErrExists) {
		t.Fatalf("got %v, want ErrExists", err)
	}
	if _, err := os.Lstat(filepath.Join(proj, "include", "application", "keys.h")); err == nil {
		t.Fatal("a refused write created keys.h")
	}

	// With force the original is replaced, and the secret file becomes 0600.
	if _, err := WriteEcoWattKeyFiles(proj, pub, fw, psk, true); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(proj, "src", "application", "keys.cpp")
	if got, _ := os.ReadFile(p); !bytes.Equal(got, source) {
		t.Fatal("--force did not replace keys.cpp")
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != PrivateMode {
		t.Fatalf("replaced keys.cpp has mode %04o, want 0600", st.Mode().Perm())
	}
}

// ecoWattOTAManager stands in for the original include/application/OTAManager.h
// in what it does with keys.h: includes it by its bare name, then defines
// RSA_KEY_SIZE again, which only compiles cleanly if both definitions match.
const ecoWattOTAManager = `#ifndef OTA_MANAGER_H
#define OTA_MANAGER_H
#include "keys.h"
#define OTA_CHUNK_SIZE 2048
#define RSA_KEY_SIZE 2048
#endif
`

// ecoWattMain uses the keys as the original OTAManager.cpp does and prints
// what the firmware would see.
const ecoWattMain = `#include <cstdio>
#include <cstring>
#include "application/OTAManager.h"
#include "application/keys.h"

static_assert(RSA_KEY_SIZE == 2048, "RSA_KEY_SIZE");
static_assert(AES_KEY_SIZE / 8 == sizeof(AES_FIRMWARE_KEY), "AES_KEY_SIZE is the key's bits");

int main() {
	uint8_t signature[RSA_KEY_SIZE / 8];
	std::memset(signature, 0, sizeof(signature));
	// The firmware parses the PEM with its terminating NUL: strlen + 1 bytes.
	std::printf("%u\n", (unsigned)(std::strlen(SERVER_PUBLIC_KEY) + 1));
	std::fputs(SERVER_PUBLIC_KEY, stdout);
	// It sets the 32 key bytes (256 bits) as the AES decryption key.
	for (int i = 0; i < 32; i++) std::printf("%02x", AES_FIRMWARE_KEY[i]);
	// It keys the chunk HMAC with strlen(HMAC_PSK) bytes of the PSK text.
	std::printf("\n%s\n%u %u %u\n", HMAC_PSK, (unsigned)std::strlen(HMAC_PSK), (unsigned)HMAC_PSK_SIZE, (unsigned)sizeof(signature));
	return 0;
}
`

// TestEcoWattKeysCompile builds the generated keys.h and keys.cpp as two
// translation units with the C++ compiler, links them as the original
// firmware does, runs the program and checks that the firmware would see
// exactly the keys.
func TestEcoWattKeysCompile(t *testing.T) {
	cxx := requireTool(t, "g++")
	pub, fw, psk := ecoWattInputs(t)
	dir := t.TempDir()
	if _, err := WriteEcoWattKeyFiles(dir, pub, fw, psk, false); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "include", "application", "OTAManager.h"), []byte(ecoWattOTAManager), 0o644)
	os.WriteFile(filepath.Join(dir, "src", "main.cpp"), []byte(ecoWattMain), 0o644)
	prog := filepath.Join(dir, "prog")
	cmd := exec.Command(cxx, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-I", filepath.Join(dir, "include"), "-o", prog,
		filepath.Join(dir, "src", "main.cpp"), filepath.Join(dir, "src", "application", "keys.cpp"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the generated keys.h and keys.cpp do not compile and link: %v\n%s", err, out)
	}
	out, err := exec.Command(prog).Output()
	if err != nil {
		t.Fatal(err)
	}
	pemText := string(pub.PEM())
	want := strconv.Itoa(len(pemText)+1) + "\n" + pemText + hex.EncodeToString(fw[:]) + "\n" +
		psk.Hex() + "\n" + fmt.Sprintf("%d %d %d\n", 2*protocol.PSKSize, 2*protocol.PSKSize, 256)
	if string(out) != want {
		t.Fatalf("the compiled firmware sees\n%s\nwant\n%s", out, want)
	}
}
