package keys

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ecowatt/fota/internal/atomicfile"
)

// File names inside a keys directory.
const (
	SigningKeyFile  = "signing.key"
	PublicKeyFile   = "signing.pub"
	FirmwareKeyFile = "firmware.key"
	HeaderFile      = "keys.h"
)

// Private files (keys and headers that embed a key) are readable by the owner only.
const (
	PrivateMode fs.FileMode = 0o600
	PublicMode  fs.FileMode = 0o644
)

// maxKeyFile bounds what a loader reads; real key files are a few KiB.
const maxKeyFile = 64 << 10

// ErrExists is returned when a write would replace a file and force is off.
var ErrExists = atomicfile.ErrExists

// WriteFile writes data to path atomically with mode perm: a temporary file in
// the same folder, synced, then linked into place. Without force an existing
// path is left untouched and ErrExists returned, even if it appears meanwhile.
func WriteFile(path string, data []byte, perm fs.FileMode, force bool) error {
	err := atomicfile.Write(path, perm, force, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
	if errors.Is(err, ErrExists) {
		return fmt.Errorf("%w (use --force to replace it)", err)
	}
	return err
}

// InitResult describes the files Init wrote.
type InitResult struct {
	Dir       string
	Public    *PublicKey
	Files     []string
	Algorithm string
}

// Init makes a signing key of alg and a firmware key in dir, and writes
// signing.key, signing.pub, firmware.key and keys.h. It checks every target
// before writing any, so a refusal leaves the folder as it was.
func Init(dir, alg string, force bool, random io.Reader) (*InitResult, error) {
	if random == nil {
		random = rand.Reader
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create key folder: %w", err)
	}
	names := []string{SigningKeyFile, PublicKeyFile, FirmwareKeyFile, HeaderFile}
	if !force {
		for _, n := range names {
			p := filepath.Join(dir, n)
			if _, err := os.Lstat(p); err == nil {
				return nil, fmt.Errorf("%s: %w (use --force to replace the keys; every bundle and device built with the old ones will stop verifying)", p, ErrExists)
			}
		}
	}
	signing, err := Generate(alg, random)
	if err != nil {
		return nil, err
	}
	fwKey, err := NewFirmwareKey(random)
	if err != nil {
		return nil, err
	}
	priv, err := signing.MarshalPrivatePEM()
	if err != nil {
		return nil, err
	}
	pub := signing.Public()
	header := DeviceHeader(pub, fwKey, nil)
	contents := map[string]struct {
		data []byte
		mode fs.FileMode
	}{
		SigningKeyFile:  {priv, PrivateMode},
		PublicKeyFile:   {pub.PEM(), PublicMode},
		FirmwareKeyFile: {fwKey[:], PrivateMode},
		HeaderFile:      {header, PrivateMode},
	}
	res := &InitResult{Dir: dir, Public: pub, Algorithm: alg}
	for _, n := range names {
		c := contents[n]
		p := filepath.Join(dir, n)
		if err := WriteFile(p, c.data, c.mode, force); err != nil {
			return nil, err
		}
		res.Files = append(res.Files, p)
	}
	return res, nil
}

func readKeyFile(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", what, path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("read %s %s: larger than %d bytes, not a key file", what, path, maxKeyFile)
	}
	return data, nil
}

// LoadSigningKey reads a PEM private key file.
func LoadSigningKey(path string) (*SigningKey, error) {
	data, err := readKeyFile(path, "signing key")
	if err != nil {
		return nil, err
	}
	k, err := ParseSigningKey(data)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return k, nil
}

// LoadPublicKey reads a PEM public key file.
func LoadPublicKey(path string) (*PublicKey, error) {
	data, err := readKeyFile(path, "public key")
	if err != nil {
		return nil, err
	}
	k, err := ParsePublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	return k, nil
}

// LoadFirmwareKey reads a firmware key file.
func LoadFirmwareKey(path string) (FirmwareKey, error) {
	data, err := readKeyFile(path, "firmware key")
	if err != nil {
		return FirmwareKey{}, err
	}
	k, err := ParseFirmwareKey(data)
	if err != nil {
		return k, fmt.Errorf("firmware key %s: %w", path, err)
	}
	return k, nil
}

// PermissionWarning returns a sentence telling how to fix a private file that
// others can read, or "" when its mode is safe (or it cannot be checked).
func PermissionWarning(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return ""
	}
	if mode := st.Mode().Perm(); mode&0o077 != 0 {
		return fmt.Sprintf("%s is readable by others (mode %04o); run: chmod 600 %s", path, mode, path)
	}
	return ""
}
