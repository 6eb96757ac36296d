package bundle

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota/esp32"
	"github.com/ecowatt/fota/keys"
)

// The vectors in testdata/vectors drive the format tests, and other
// implementations (the C client, docs/FORMAT.md's openssl commands) use the
// same files. Each NAME.vector states what must happen:
//
//	expect: success | <failure name from expectations>
//	comment: what was done to the bundle
//	pub: public key file (default signing.pub)
//	firmware-key: firmware key file (default firmware.key)
//
//	<bundle, base64>
//
// Regenerate with: go test ./bundle -run TestVectors -update
var update = flag.Bool("update", false, "regenerate testdata/vectors")

const vectorDir = "testdata/vectors"

// expectations names each failure a vector can expect.
var expectations = map[string]error{
	"truncated":                ErrTruncated,
	"malformed":                ErrMalformed,
	"unsupported format":       ErrUnsupportedVersion,
	"too large":                ErrTooLarge,
	"signature failure":        ErrSignature,
	"untrusted key":            ErrUntrustedKey,
	"ciphertext hash mismatch": ErrCiphertextHash,
	"plaintext hash mismatch":  ErrPlaintextHash,
	"decryption failure":       ErrDecrypt,
	"trailing data":            ErrTrailingData,
}

type vector struct {
	name, expect, comment, pub, firmwareKey string
	bundle                                  []byte
}

func TestVectors(t *testing.T) {
	if *update {
		generateVectors(t)
	}
	files, _ := filepath.Glob(filepath.Join(vectorDir, "*.vector"))
	if len(files) < 20 {
		t.Fatalf("found %d vectors in %s, want at least 20", len(files), vectorDir)
	}
	firmware := readFile(t, filepath.Join(vectorDir, "firmware.bin"))
	for _, file := range files {
		v := parseVector(t, file)
		t.Run(v.name, func(t *testing.T) {
			pub, err := keys.LoadPublicKey(filepath.Join(vectorDir, v.pub))
			if err != nil {
				t.Fatal(err)
			}
			fw, err := keys.LoadFirmwareKey(filepath.Join(vectorDir, v.firmwareKey))
			if err != nil {
				t.Fatal(err)
			}
			plain, _, err := open(v.bundle, pub, &fw)
			if v.expect == "success" {
				if err != nil {
					t.Fatalf("want success, got %v", err)
				}
				if !bytes.Equal(plain, firmware) {
					t.Fatal("decrypted firmware differs from firmware.bin")
				}
				return
			}
			want, ok := expectations[v.expect]
			if !ok {
				t.Fatalf("unknown expectation %q", v.expect)
			}
			if !errors.Is(err, want) {
				t.Fatalf("want %s, got %v", v.expect, err)
			}
		})
	}
	// The raw copy used by docs/FORMAT.md must be the good vector itself.
	if raw := readFile(t, filepath.Join(vectorDir, "good-rsa.fota")); !bytes.Equal(raw, parseVector(t, filepath.Join(vectorDir, "good-rsa.vector")).bundle) {
		t.Fatal("good-rsa.fota differs from good-rsa.vector")
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parseVector(t *testing.T, file string) vector {
	t.Helper()
	data := readFile(t, file)
	checkVectorText(t, file, data)
	head, body, ok := strings.Cut(string(data), "\n\n")
	if !ok {
		t.Fatalf("%s: no blank line between headers and bundle", file)
	}
	v := vector{name: strings.TrimSuffix(filepath.Base(file), ".vector"), pub: "signing.pub", firmwareKey: "firmware.key"}
	sc := bufio.NewScanner(strings.NewReader(head))
	for sc.Scan() {
		k, val, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			t.Fatalf("%s: bad header line %q", file, sc.Text())
		}
		switch k {
		case "expect":
			v.expect = val
		case "comment":
			v.comment = val
		case "pub":
			v.pub = val
		case "firmware-key":
			v.firmwareKey = val
		default:
			t.Fatalf("%s: unknown header %q", file, k)
		}
	}
	if v.expect == "" {
		t.Fatalf("%s: no expect header", file)
	}
	b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(body), ""))
	if err != nil {
		t.Fatalf("%s: bundle is not base64: %v", file, err)
	}
	v.bundle = b
	return v
}

// checkVectorText holds a vector file to what docs/FORMAT.md promises
// readers in other languages: ASCII in lines ending with \n (the last one
// too), base64 lines of at most 76 characters.
func checkVectorText(t *testing.T, file string, data []byte) {
	t.Helper()
	if len(data) == 0 || data[len(data)-1] != '\n' {
		t.Fatalf("%s: no newline at the end", file)
	}
	head := true
	for i, line := range strings.Split(string(data[:len(data)-1]), "\n") {
		for _, c := range []byte(line) {
			if c < 0x20 || c > 0x7e {
				t.Fatalf("%s:%d: byte 0x%02x: want printable ASCII", file, i+1, c)
			}
		}
		switch {
		case head && line == "":
			head = false
		case head && strings.HasSuffix(line, " "):
			t.Fatalf("%s:%d: trailing space", file, i+1)
		case !head && (line == "" || len(line) > 76):
			t.Fatalf("%s:%d: base64 line of %d characters, want 1 to 76", file, i+1, len(line))
		}
	}
}

// generateVectors writes the vector files from the fixed test keys (made
// once, kept in testdata) with a fixed IV and time, so regeneration is
// reproducible for RSA and Ed25519, whose signatures are deterministic.
func generateVectors(t *testing.T) {
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(vectorDir, 0o755))
	signer := fixedKey(t, "signing", keys.AlgRSA)
	edSigner := fixedKey(t, "ed25519", keys.AlgEd25519)
	other := fixedKey(t, "other", keys.AlgRSA)
	fwKey := fixedFirmwareKey(t, "firmware.key")
	fixedFirmwareKey(t, "other-firmware.key")

	firmware, err := esp32.BuildImage(esp32.AppInfo{ChipID: 0, Version: "1.0.4", ProjectName: "ecowatt", SecureVersion: 1,
		Time: "12:00:00", Date: "Nov 27 2026", IDFVersion: "v5.2.1"}, bytes.Repeat([]byte("EcoWatt test firmware. "), 130))
	must(err)
	must(os.WriteFile(filepath.Join(vectorDir, "firmware.bin"), firmware, 0o644))

	build := func(s *keys.SigningKey, fw []byte) []byte {
		var out bytes.Buffer
		_, err := Build(&out, bytes.NewReader(fw), BuildOptions{
			Product: "ecowatt", Hardware: "esp32", Version: "1.0.4", SecurityCounter: 1,
			Created: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC),
			IV:      []byte("0123456789abcdef"), Signer: s, FirmwareKey: fwKey, TempDir: t.TempDir(),
		})
		must(err)
		return out.Bytes()
	}
	good := build(signer, firmware)
	env, err := ReadEnvelope(bytes.NewReader(good))
	must(err)
	mEnd := HeaderSize + len(env.ManifestBytes)
	sigEnd := mEnd + len(env.Signature)
	payload := int(env.PayloadOffset())
	must(os.WriteFile(filepath.Join(vectorDir, "good-rsa.fota"), good, 0o644))

	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	flipAt := func(i int) []byte { return edit(func(b []byte) []byte { b[i] ^= 0x01; return b }) }
	resigned := func(change func(string) string, dropLegacy bool) []byte {
		mb := []byte(change(string(env.ManifestBytes)))
		sig, err := signer.Sign(mb)
		must(err)
		legacy := env.LegacySignature
		if dropLegacy {
			legacy = nil
		}
		var out bytes.Buffer
		out.Write(header{manifestLen: uint32(len(mb)), signatureLen: uint16(len(sig)), legacyLen: uint16(len(legacy))}.marshal())
		out.Write(mb)
		out.Write(sig)
		out.Write(legacy)
		out.Write(good[payload:])
		return out.Bytes()
	}
	type spec struct {
		expect, comment, pub, fwKey string
		b                           []byte
	}
	vectors := map[string]spec{
		"good-rsa":               {"success", "RSA-2048 release of firmware.bin, with the legacy signature", "", "", good},
		"good-ed25519":           {"success", "Ed25519 release of firmware.bin, no legacy signature", "ed25519.pub", "", build(edSigner, firmware)},
		"truncated-header":       {"truncated", "cut inside the 16-byte header", "", "", good[:10]},
		"truncated-manifest":     {"truncated", "cut inside the manifest", "", "", good[:mEnd-5]},
		"truncated-signature":    {"truncated", "cut inside the signature", "", "", good[:sigEnd-5]},
		"truncated-legacy":       {"truncated", "cut inside the legacy signature", "", "", good[:payload-5]},
		"truncated-ciphertext":   {"truncated", "last 100 ciphertext bytes missing", "", "", good[:len(good)-100]},
		"trailing-data":          {"trailing data", "one byte after the ciphertext", "", "", append(bytes.Clone(good), 0)},
		"bad-magic":              {"malformed", "magic is FOTB", "", "", flipAt(3)},
		"format-version-2":       {"unsupported format", "header format version 2", "", "", edit(func(b []byte) []byte { b[5] = 2; return b })},
		"header-flags":           {"malformed", "unknown header flag set", "", "", edit(func(b []byte) []byte { b[7] = 1; return b })},
		"manifest-length-huge":   {"too large", "header declares a 16 MiB manifest", "", "", edit(func(b []byte) []byte { b[9] = 0xFF; return b })},
		"signature-length-huge":  {"too large", "header declares a 65535-byte signature", "", "", edit(func(b []byte) []byte { b[12], b[13] = 0xFF, 0xFF; return b })},
		"manifest-bit-flipped":   {"signature failure", "one bit of the manifest's version flipped", "", "", flipAt(bytes.Index(good, []byte(`"1.0.4"`)) + 5)},
		"signature-bit-flipped":  {"signature failure", "one bit of the signature flipped", "", "", flipAt(mEnd + 7)},
		"legacy-bit-flipped":     {"signature failure", "one bit of the legacy signature flipped", "", "", flipAt(sigEnd + 7)},
		"ciphertext-bit-flipped": {"ciphertext hash mismatch", "one bit of the first ciphertext block flipped", "", "", flipAt(payload)},
		"untrusted-key":          {"untrusted key", "signed by other.key, verified with signing.pub", "", "", build(other, firmware)},
		"wrong-public-key":       {"untrusted key", "good bundle verified with other.pub", "other.pub", "", good},
		"wrong-firmware-key":     {"decryption failure", "good bundle decrypted with other-firmware.key", "", "other-firmware.key", good},
		"downgraded-version":     {"signature failure", "manifest version changed to 1.0.3 after signing", "", "", edit(func(b []byte) []byte { i := bytes.Index(b, []byte(`"1.0.4"`)); b[i+5] = '3'; return b })},
		"counter-lowered":        {"signature failure", "security counter changed to 0 after signing", "", "", edit(func(b []byte) []byte { i := bytes.Index(b, []byte(`"security_counter": 1`)); b[i+20] = '0'; return b })},
		"resigned-plaintext-hash": {"plaintext hash mismatch", "validly signed manifest with another plaintext sha256 (no legacy signature)", "", "", resigned(func(s string) string {
			return replaceField(s, "plaintext_sha256", strings.Repeat("ab", 32))
		}, true)},
		"resigned-ciphertext-hash": {"ciphertext hash mismatch", "validly signed manifest with another ciphertext sha256", "", "", resigned(func(s string) string {
			return replaceField(s, "ciphertext_sha256", strings.Repeat("cd", 32))
		}, false)},
		"resigned-legacy-mismatch": {"signature failure", "validly signed manifest with another plaintext sha256, old legacy signature kept", "", "", resigned(func(s string) string {
			return replaceField(s, "plaintext_sha256", strings.Repeat("ab", 32))
		}, false)},
		"resigned-oversize": {"too large", "validly signed manifest declaring 1 GiB of firmware", "", "", resigned(func(s string) string {
			s = regexp.MustCompile(`"plaintext_size": \d+`).ReplaceAllString(s, `"plaintext_size": 1073741824`)
			return regexp.MustCompile(`"ciphertext_size": \d+`).ReplaceAllString(s, `"ciphertext_size": 1073741840`)
		}, true)},
	}
	old, _ := filepath.Glob(filepath.Join(vectorDir, "*.vector"))
	for _, f := range old {
		os.Remove(f)
	}
	names := make([]string, 0, len(vectors))
	for n := range vectors {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v := vectors[n]
		var out bytes.Buffer
		fmt.Fprintf(&out, "expect: %s\ncomment: %s\n", v.expect, v.comment)
		if v.pub != "" {
			fmt.Fprintf(&out, "pub: %s\n", v.pub)
		}
		if v.fwKey != "" {
			fmt.Fprintf(&out, "firmware-key: %s\n", v.fwKey)
		}
		out.WriteString("\n")
		enc := base64.StdEncoding.EncodeToString(v.b)
		for len(enc) > 76 {
			out.WriteString(enc[:76] + "\n")
			enc = enc[76:]
		}
		out.WriteString(enc + "\n")
		must(os.WriteFile(filepath.Join(vectorDir, n+".vector"), out.Bytes(), 0o644))
	}
}

func replaceField(manifest, field, value string) string {
	i := strings.Index(manifest, `"`+field+`": "`)
	start := i + len(field) + 5
	end := start + strings.IndexByte(manifest[start:], '"')
	return manifest[:start] + value + manifest[end:]
}

// fixedKey loads NAME.key from the vector folder, making it on first use.
// These keys are public test material: never use them for a real fleet.
func fixedKey(t *testing.T, name, alg string) *keys.SigningKey {
	p := filepath.Join(vectorDir, name+".key")
	if k, err := keys.LoadSigningKey(p); err == nil {
		return k
	}
	k, err := keys.Generate(alg, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := k.MarshalPrivatePEM()
	os.WriteFile(p, priv, 0o600)
	os.WriteFile(filepath.Join(vectorDir, name+".pub"), k.Public().PEM(), 0o644)
	return k
}

func fixedFirmwareKey(t *testing.T, name string) keys.FirmwareKey {
	p := filepath.Join(vectorDir, name)
	if k, err := keys.LoadFirmwareKey(p); err == nil {
		return k
	}
	k, err := keys.NewFirmwareKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, k[:], 0o600)
	return k
}

// TestOpenSSLChecksVectors runs the commands docs/FORMAT.md gives, so an
// independent toolchain confirms the format: both signatures and decryption.
func TestOpenSSLChecksVectors(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is not installed; .ci/run must install it")
		}
		t.Skip("openssl is not installed; install it to cross-check the format")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "check.sh")
	// The same commands as docs/FORMAT.md, "Checking a bundle with openssl".
	os.WriteFile(script, []byte(opensslScript), 0o755)
	cmd := exec.Command("bash", script, filepath.Join(vectorDir, "good-rsa.fota"), filepath.Join(vectorDir, "signing.pub"), filepath.Join(vectorDir, "firmware.key"), dir)
	cmd.Env = append(os.Environ(), "OPENSSL="+openssl)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl check failed: %v\n%s", err, out)
	}
	if got := readFile(t, filepath.Join(dir, "firmware.bin")); !bytes.Equal(got, readFile(t, filepath.Join(vectorDir, "firmware.bin"))) {
		t.Fatal("openssl decrypted different firmware")
	}
	if strings.Count(string(out), "Verified OK") != 2 {
		t.Fatalf("want two 'Verified OK' lines, got:\n%s", out)
	}
}

// opensslScript must stay identical to the block in docs/FORMAT.md;
// TestFormatDocScript checks that.
const opensslScript = `set -euo pipefail
B=$1 PUB=$2 KEY=$3 OUT=$4
OPENSSL=${OPENSSL:-openssl}
u16() { od -An -tu1 -j "$1" -N 2 "$B" | awk '{print $1*256+$2}'; }
u32() { od -An -tu1 -j "$1" -N 4 "$B" | awk '{print (($1*256+$2)*256+$3)*256+$4}'; }
M=$(u32 8) S=$(u16 12) L=$(u16 14)
head -c $((16 + M)) "$B" | tail -c "$M" > "$OUT/manifest.json"
head -c $((16 + M + S)) "$B" | tail -c "$S" > "$OUT/manifest.sig"
head -c $((16 + M + S + L)) "$B" | tail -c "$L" > "$OUT/legacy.sig"
tail -c +$((17 + M + S + L)) "$B" > "$OUT/payload.bin"
field() { sed -n "s/^  \"$1\": \"\(.*\)\",\{0,1\}$/\1/p" "$OUT/manifest.json"; }
"$OPENSSL" dgst -sha256 -verify "$PUB" -signature "$OUT/manifest.sig" "$OUT/manifest.json"
test "$(sha256sum < "$OUT/payload.bin" | cut -d' ' -f1)" = "$(field ciphertext_sha256)"
"$OPENSSL" enc -d -aes-256-cbc -K "$(od -An -tx1 -v "$KEY" | tr -d ' \n')" -iv "$(field iv)" \
  -in "$OUT/payload.bin" -out "$OUT/firmware.bin"
test "$(sha256sum < "$OUT/firmware.bin" | cut -d' ' -f1)" = "$(field plaintext_sha256)"
"$OPENSSL" dgst -sha256 -verify "$PUB" -signature "$OUT/legacy.sig" "$OUT/firmware.bin"
`

func TestFormatDocScript(t *testing.T) {
	doc := string(readFile(t, filepath.Join("..", "docs", "FORMAT.md")))
	if !strings.Contains(doc, "```sh\n"+opensslScript+"```") {
		t.Fatal("docs/FORMAT.md does not hold the openssl script that TestOpenSSLChecksVectors runs; copy opensslScript into it")
	}
}
