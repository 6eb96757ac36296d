package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

// writeCredentials writes a credentials file as 'fota device add' does.
func writeCredentials(t *testing.T, path string, c Credentials) {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestKeysExportEcoWatt(t *testing.T) {
	dir := t.TempDir()
	keyDir := filepath.Join(dir, "keys")
	run(t, "keys", "init", "--dir", keyDir).expect(t, 0, "(rsa-2048)", "")
	psk, _ := protocol.NewPSK()
	cred := filepath.Join(dir, "dev.json")
	// Upper-case hex parses to the same key; the firmware must get the
	// lower-case text the server keys its legacy chunk HMACs with.
	writeCredentials(t, cred, Credentials{DeviceID: "ESP32_EcoWatt_Smart", PSK: strings.ToUpper(psk.Hex()), Server: "http://10.0.0.2:8080", Hardware: "esp32"})
	proj := filepath.Join(dir, "ECOWATT")
	os.MkdirAll(proj, 0o755)
	os.WriteFile(filepath.Join(proj, "platformio.ini"), []byte("[env:esp32dev]\n"), 0o644)

	run(t, "keys", "export-ecowatt", "--credentials", cred, "--keys", keyDir).expect(t, 2, "", "exactly one firmware project folder")
	run(t, "keys", "export-ecowatt", "--credentials", cred, proj).expect(t, 2, "", "--credentials and --keys are required")
	run(t, "keys", "export-ecowatt", "--credentials", filepath.Join(dir, "none.json"), "--keys", keyDir, proj).expect(t, 1, "", "read credentials")
	bad := filepath.Join(dir, "bad.json")
	writeCredentials(t, bad, Credentials{DeviceID: "d1", PSK: "not a key"})
	run(t, "keys", "export-ecowatt", "--credentials", bad, "--keys", keyDir, proj).expect(t, 1, "", "device key must be 64 hex digits")

	r := run(t, "keys", "export-ecowatt", "--credentials", cred, "--keys", keyDir, proj)
	r.expect(t, 0, "wrote "+filepath.Join(proj, "include", "application", "keys.h")+"\nwrote "+filepath.Join(proj, "src", "application", "keys.cpp")+"\n", "")
	r.expect(t, 0, `set DEVICE_ID "ESP32_EcoWatt_Smart" and FLASK_SERVER_URL "http://10.0.0.2:8080" in `+filepath.Join(proj, "include", "application", "credentials.h"), "")
	if r.stderr != "" {
		t.Fatalf("unexpected stderr: %s", r.stderr)
	}
	if strings.Contains(r.stdout, psk.Hex()) || strings.Contains(strings.ToLower(r.stdout), psk.Hex()) {
		t.Fatal("the device key was printed")
	}
	pub, _ := keys.LoadPublicKey(filepath.Join(keyDir, keys.PublicKeyFile))
	fw, _ := keys.LoadFirmwareKey(filepath.Join(keyDir, keys.FirmwareKeyFile))
	header, source, err := keys.EcoWattKeyFiles(pub, fw, psk)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(source, []byte(`const char* HMAC_PSK = "`+psk.Hex()+`";`)) {
		t.Fatalf("keys.cpp does not hold the lower-case PSK text:\n%s", source)
	}
	for i, p := range keys.EcoWattKeyPaths(proj) {
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if want := [][]byte{header, source}[i]; !bytes.Equal(got, want) {
			t.Errorf("%s:\n%s\nwant\n%s", p, got, want)
		}
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", p, st.Mode().Perm())
		}
	}

	// Another device's keys never replace these without --force.
	other, _ := protocol.NewPSK()
	cred2 := filepath.Join(dir, "dev2.json")
	writeCredentials(t, cred2, Credentials{DeviceID: "d2", PSK: other.Hex()})
	run(t, "keys", "export-ecowatt", "--credentials", cred2, "--keys", keyDir, proj).expect(t, 1, "", "keys.h already exists\nfota: hint: use --force")
	if got, _ := os.ReadFile(keys.EcoWattKeyPaths(proj)[1]); !bytes.Equal(got, source) {
		t.Fatal("a refused export changed keys.cpp")
	}
	run(t, "keys", "export-ecowatt", "--credentials", cred2, "--keys", keyDir, "--force", proj).expect(t, 0, `set DEVICE_ID "d2" in`, "")
	if got, _ := os.ReadFile(keys.EcoWattKeyPaths(proj)[1]); !bytes.Contains(got, []byte(other.Hex())) {
		t.Fatal("--force did not write the second device's key")
	}

	// A folder that is not a PlatformIO project is written, with a warning.
	elsewhere := filepath.Join(dir, "elsewhere")
	run(t, "keys", "export-ecowatt", "--credentials", cred, "--keys", keyDir, elsewhere).expect(t, 0, "wrote", "has no platformio.ini")
}

func TestKeysExportEcoWattRefusesNonRSA(t *testing.T) {
	dir := t.TempDir()
	keyDir := filepath.Join(dir, "keys")
	run(t, "keys", "init", "--dir", keyDir, "--alg", "ecdsa-p256").expect(t, 0, "(ecdsa-p256)", "")
	psk, _ := protocol.NewPSK()
	cred := filepath.Join(dir, "dev.json")
	writeCredentials(t, cred, Credentials{DeviceID: "d1", PSK: psk.Hex()})
	proj := filepath.Join(dir, "ECOWATT")
	run(t, "keys", "export-ecowatt", "--credentials", cred, "--keys", keyDir, proj).
		expect(t, 1, "", "verifies RSA-2048 signatures only, and signing key")
	run(t, "keys", "export-ecowatt", "--credentials", cred, "--keys", keyDir, proj).
		expect(t, 1, "", "fota: hint: sign the releases for these devices with an RSA-2048 key")
	if _, err := os.Stat(proj); err == nil {
		t.Fatal("a refused export created the project folder")
	}
}
