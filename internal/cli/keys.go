package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

const keysUsage = `Usage:
  fota keys init --dir DIR [--alg rsa-2048|ecdsa-p256|ed25519] [--force]
  fota keys export-ecowatt --credentials dev.json --keys DIR [--force] PROJECT

init makes the release signing key pair, the fleet firmware key (AES-256)
and keys.h, a C header for device builds (SERVER_PUBLIC_KEY, AES_FIRMWARE_KEY).

  DIR/signing.key   private signing key, PKCS#8 PEM, mode 0600: keep it offline
  DIR/signing.pub   public key, PKIX PEM: give it to the server (--trust)
  DIR/firmware.key  32-byte AES-256 key, mode 0600: devices and release builds only
  DIR/keys.h        C header with the public key and firmware key, mode 0600

export-ecowatt writes one device's keys into the original EcoWatt ESP32
firmware project PROJECT (the PlatformIO folder), replacing its two key files:

  PROJECT/include/application/keys.h    declarations, as the original's
  PROJECT/src/application/keys.cpp      SERVER_PUBLIC_KEY (DIR/signing.pub),
                                        AES_FIRMWARE_KEY (DIR/firmware.key) and
                                        HMAC_PSK (the device key from dev.json)

Both are mode 0600. The firmware verifies RSA-2048 signatures only.

Existing files are never replaced without --force.

Examples:
  fota keys init --dir keys
  fota keys export-ecowatt --credentials dev.json --keys keys --force PIO/ECOWATT
`

func runKeys(e *env, args []string) error {
	return subcommand(e, "keys", args, map[string]func(*env, []string) error{
		"init": runKeysInit, "export-ecowatt": runKeysExportEcoWatt,
	}, keysUsage)
}

func runKeysInit(e *env, args []string) error {
	fs := newFlags("keys init")
	dir := fs.String("dir", "", "folder to write the keys to (created if missing)")
	alg := fs.String("alg", keys.AlgRSA, "signature algorithm: "+strings.Join(keys.Algorithms, ", "))
	force := fs.Bool("force", false, "replace existing key files")
	rest, err := parseFlags(e, fs, keysUsage, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("fota keys init takes no arguments, got %q", rest)
	}
	if *dir == "" {
		return &usageError{msg: "--dir is required", hint: "fota keys init --dir keys"}
	}
	if !slices.Contains(keys.Algorithms, *alg) {
		return usagef("--alg %q: want one of %s", *alg, strings.Join(keys.Algorithms, ", "))
	}
	res, err := keys.Init(*dir, *alg, *force, nil)
	if err != nil {
		return err
	}
	for _, f := range res.Files {
		fmt.Fprintf(e.stdout, "wrote %s\n", f)
	}
	fmt.Fprintf(e.stdout, "key id %s (%s)\n", res.Public.ID(), res.Algorithm)
	fmt.Fprintf(e.stdout, "keep %s/%s and %s/%s secret; give the server %s/%s\n",
		*dir, keys.SigningKeyFile, *dir, keys.FirmwareKeyFile, *dir, keys.PublicKeyFile)
	return nil
}

func runKeysExportEcoWatt(e *env, args []string) error {
	fs := newFlags("keys export-ecowatt")
	credPath := fs.String("credentials", "", "the device's credentials file from 'fota device add'")
	keyDir := fs.String("keys", "", "key folder made by 'fota keys init' (signing.pub, firmware.key)")
	force := fs.Bool("force", false, "replace the project's keys.h and keys.cpp")
	rest, err := parseFlags(e, fs, keysUsage, args)
	if err != nil {
		return err
	}
	hint := "fota keys export-ecowatt --credentials dev.json --keys keys --force PIO/ECOWATT"
	if len(rest) != 1 {
		return &usageError{msg: "fota keys export-ecowatt needs exactly one firmware project folder", hint: hint}
	}
	if *credPath == "" || *keyDir == "" {
		return &usageError{msg: "--credentials and --keys are required", hint: hint}
	}
	if w := keys.PermissionWarning(*credPath); w != "" {
		e.warn("%s", w)
	}
	cred, psk, err := loadCredentials(*credPath)
	if err != nil {
		return err
	}
	x, err := prepareEcoWattKeys(e, rest[0], *keyDir, *force)
	if err != nil {
		return err
	}
	paths, err := x.write(psk)
	if err != nil {
		return err
	}
	for _, p := range paths {
		fmt.Fprintf(e.stdout, "wrote %s\n", p)
	}
	// The device id and server URL are not secret and live in the
	// project's credentials.h next to the WiFi settings, which fota leaves alone.
	fmt.Fprintf(e.stdout, "set DEVICE_ID %q", cred.DeviceID)
	if cred.Server != "" {
		fmt.Fprintf(e.stdout, " and FLASK_SERVER_URL %q", cred.Server)
	}
	fmt.Fprintf(e.stdout, " in %s\n", filepath.Join(rest[0], "include", "application", "credentials.h"))
	fmt.Fprintf(e.stdout, "the original firmware speaks only the EcoWatt API: register %s with --api ecowatt or both "+
		"(fota device set --id %s --api ecowatt), or every request it makes is refused\n", cred.DeviceID, cred.DeviceID)
	return nil
}

// ecoWattExport is what the original EcoWatt firmware's key files are made
// of, loaded and checked before anything is written.
type ecoWattExport struct {
	dir   string
	pub   *keys.PublicKey
	fw    keys.FirmwareKey
	force bool
}

// prepareEcoWattKeys loads keysDir/signing.pub and keysDir/firmware.key for
// the firmware project folder dir, refuses a key the original firmware
// cannot verify with, and refuses existing key files in dir unless force.
// It writes nothing, so a caller that is about to make a device key it can
// show only once (fota device add) calls it first, and write after.
func prepareEcoWattKeys(e *env, dir, keysDir string, force bool) (*ecoWattExport, error) {
	pubPath := filepath.Join(keysDir, keys.PublicKeyFile)
	pub, err := keys.LoadPublicKey(pubPath)
	if err != nil {
		return nil, err
	}
	if err := keys.CheckEcoWattKey(pub); err != nil {
		return nil, withHint(fmt.Errorf("%s: %w", pubPath, err),
			"sign the releases for these devices with an RSA-2048 key: fota keys init --dir keys-ecowatt (rsa-2048 is the default)")
	}
	fw, err := loadPrivate(e, filepath.Join(keysDir, keys.FirmwareKeyFile), keys.LoadFirmwareKey)
	if err != nil {
		return nil, err
	}
	// Where the files will go must be folders (or not exist yet), so that
	// nothing fails after fota device add has registered the device.
	folders := []string{dir}
	for _, p := range keys.EcoWattKeyPaths(dir) {
		folders = append(folders, filepath.Dir(filepath.Dir(p)), filepath.Dir(p))
	}
	for _, d := range folders {
		if st, err := os.Stat(d); err == nil && !st.IsDir() {
			return nil, withHint(fmt.Errorf("cannot write the EcoWatt key files: %s is not a folder", d),
				"give the firmware project's folder, the one with platformio.ini")
		}
	}
	if !force {
		for _, p := range keys.EcoWattKeyPaths(dir) {
			if _, err := os.Lstat(p); err == nil {
				return nil, withHint(fmt.Errorf("%s already exists", p), "use --force to replace the project's key files")
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "platformio.ini")); errors.Is(err, os.ErrNotExist) {
		e.warn("%s has no platformio.ini: the EcoWatt firmware project is the folder that has one", dir)
	}
	return &ecoWattExport{dir: dir, pub: pub, fw: fw, force: force}, nil
}

// write writes the project's include/application/keys.h and
// src/application/keys.cpp with the device's key and returns their paths.
func (x *ecoWattExport) write(psk protocol.PSK) ([]string, error) {
	paths, err := keys.WriteEcoWattKeyFiles(x.dir, x.pub, x.fw, psk, x.force)
	if err != nil {
		return paths, fmt.Errorf("write the EcoWatt firmware's key files: %w", err)
	}
	return paths, nil
}
