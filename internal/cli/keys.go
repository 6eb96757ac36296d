package cli

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ecowatt/fota/keys"
)

const keysUsage = `Usage:
  fota keys init --dir DIR [--alg rsa-2048|ecdsa-p256|ed25519] [--force]

Makes the release signing key pair, the fleet firmware key (AES-256) and
keys.h, a C header for device builds (SERVER_PUBLIC_KEY, AES_FIRMWARE_KEY).

  DIR/signing.key   private signing key, PKCS#8 PEM, mode 0600: keep it offline
  DIR/signing.pub   public key, PKIX PEM: give it to the server (--trust)
  DIR/firmware.key  32-byte AES-256 key, mode 0600: devices and release builds only
  DIR/keys.h        C header with the public key and firmware key, mode 0600

Existing files are never replaced without --force.

Example:
  fota keys init --dir keys
`

func runKeys(e *env, args []string) error {
	return subcommand(e, "keys", args, map[string]func(*env, []string) error{"init": runKeysInit}, keysUsage)
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
