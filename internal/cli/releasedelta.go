package cli

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/delta"
	"github.com/ecowatt/fota/esp32"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/semver"
)

// deltaBase is an image a release's delta is made from: what devices run now.
type deltaBase struct {
	path    string
	version string
	image   []byte
}

// loadDeltaBase reads a --delta-from argument: a bundle (.fota, decrypted
// with the firmware key; its version from its signed manifest, checked
// with the signing key's public half), a raw image whose ESP32 app
// descriptor says its version, or VERSION=IMAGE for a raw image without one.
//
// A base must be of the release's hardware and product: a patch from
// another product's image could never be used.
func loadDeltaBase(arg string, signer *keys.SigningKey, fw keys.FirmwareKey, hardware, product string) (*deltaBase, error) {
	version, path, named := strings.Cut(arg, "=")
	if !named {
		path, version = arg, ""
	}
	if named {
		if _, err := semver.Parse(version); err != nil {
			return nil, usagef("--delta-from %s: %q is not a version like 1.0.4 (VERSION=IMAGE)", arg, version)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--delta-from: open base image: %w", err)
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err == nil && string(magic[:]) == bundle.Magic {
		if named {
			return nil, usagef("--delta-from %s: a bundle says its own version; pass the .fota file alone", arg)
		}
		b, m, err := baseFromBundle(path, signer, fw)
		if err != nil {
			return nil, err
		}
		if m.Hardware != hardware || m.Product != product {
			return nil, usagef("--delta-from %s is %s for %s, the release is %s for %s: no device could use the patch", path, m.Product, m.Hardware, product, hardware)
		}
		return b, nil
	}
	image, err := readImage(path)
	if err != nil {
		return nil, fmt.Errorf("--delta-from: %w", err)
	}
	info, err := esp32.ReadInfo(bytes.NewReader(image))
	switch {
	case err != nil && !named:
		return nil, withHint(fmt.Errorf("--delta-from %s: the image does not say its version (%v)", path, err),
			"name the version it is: --delta-from VERSION="+path+" (e.g. 1.0.3="+path+"), or give the base release's .fota bundle")
	case err != nil:
		// Not an ESP32 image: its name is the only word on its version.
	case named && info.Version != version:
		return nil, usagef("--delta-from %s: the image's app descriptor says version %s, not %s", arg, info.Version, version)
	case info.Chip != hardware || info.ProjectName != product && product != "":
		return nil, usagef("--delta-from %s is %s for %s, the release is %s for %s: no device could use the patch", path, info.ProjectName, info.Chip, product, hardware)
	default:
		version = info.Version
		if _, err := semver.Parse(version); err != nil {
			return nil, withHint(fmt.Errorf("--delta-from %s: its app descriptor's version %q is not a semantic version", path, version),
				"name the version it is: --delta-from VERSION="+path)
		}
	}
	return &deltaBase{path: path, version: version, image: image}, nil
}

// baseFromBundle decrypts an earlier release's bundle to the image its
// devices run, checking it as `fota release verify` does.
func baseFromBundle(path string, signer *keys.SigningKey, fw keys.FirmwareKey) (*deltaBase, *bundle.Manifest, error) {
	f, env, err := openBundle(path)
	if err != nil {
		return nil, nil, fmt.Errorf("--delta-from: %w", err)
	}
	defer f.Close()
	m, err := env.Verify(signer.Public())
	if err != nil {
		return nil, nil, withHint(fmt.Errorf("--delta-from %s: %w", path, err), "the base bundle must be signed by the same key as the new release")
	}
	if m.PlaintextSize > delta.MaxSize {
		return nil, nil, fmt.Errorf("--delta-from %s: its image is %d bytes; delta patches take images up to %d", path, m.PlaintextSize, delta.MaxSize)
	}
	var image bytes.Buffer
	image.Grow(int(m.PlaintextSize))
	if err := bundle.VerifyCiphertext(bufio.NewReaderSize(f, 64<<10), m, &fw, &image); err != nil {
		hint := "the bundle file is damaged: build the delta from an intact copy"
		if errors.Is(err, bundle.ErrPlaintextHash) || errors.Is(err, bundle.ErrDecrypt) {
			hint = "is it encrypted with this firmware key?"
		}
		return nil, nil, withHint(fmt.Errorf("--delta-from %s: %w", path, err), hint)
	}
	return &deltaBase{path: path, version: m.Version, image: image.Bytes()}, m, nil
}

// appendDeltas makes a patch from each base to target and appends it to
// the bundle being written to w. A base that is the target, or a patch no
// smaller than the image, is left out with a warning: sending it would save
// nothing.
func appendDeltas(e *env, w io.Writer, full *bundle.Manifest, target []byte, bases []*deltaBase, compression string,
	signer *keys.SigningKey, fw keys.FirmwareKey) ([]*bundle.Manifest, error) {
	var out []*bundle.Manifest
	seen := map[[32]byte]string{sha256.Sum256(target): "the release's own image"}
	versions := map[string]string{}
	for _, b := range bases {
		sum := sha256.Sum256(b.image)
		if prev, dup := seen[sum]; dup {
			return nil, usagef("--delta-from %s is the same image as %s", b.path, prev)
		}
		seen[sum] = b.path
		if prev, dup := versions[b.version]; dup {
			return nil, usagef("--delta-from %s and %s are both version %s: a version is one image", prev, b.path, b.version)
		}
		versions[b.version] = b.path
		if !semver.Newer(full.Version, b.version) {
			return nil, usagef("--delta-from %s is version %s, not older than the release's %s", b.path, b.version, full.Version)
		}
		patch, err := delta.Create(b.image, target, delta.CreateOptions{Compression: compression})
		if err != nil {
			return nil, fmt.Errorf("delta from %s: %w", b.path, err)
		}
		if int64(len(patch)) >= full.PlaintextSize {
			e.warn("no delta from %s (%s): its patch is %d bytes, no smaller than the %d-byte image; devices running it get the full image",
				b.path, b.version, len(patch), full.PlaintextSize)
			continue
		}
		dm, err := bundle.WriteDelta(w, full, patch, bundle.DeltaOptions{BaseVersion: b.version, BaseSize: int64(len(b.image)),
			BaseSHA256: sum, Compression: compression}, signer, fw)
		if err != nil {
			return nil, err
		}
		out = append(out, dm)
	}
	return out, nil
}

// deltaRecord is one delta of a bundle as inspect and verify read it.
type deltaRecord struct {
	Manifest *bundle.Manifest `json:"manifest"`
	Offset   int64            `json:"offset"`
	Size     int64            `json:"size"` // the record's bytes in the bundle
	Chunks   int              `json:"chunks"`
	// Verified is set by verify only.
	Verified bool `json:"-"`
}

// readDeltaRecords reads the delta records that follow the payload, r
// positioned at the first byte after it (offset off). With trusted keys
// each is verified against full, and with the firmware key decrypted too.
func readDeltaRecords(r io.Reader, off int64, full *bundle.Manifest, trusted []*keys.PublicKey, fw *keys.FirmwareKey) ([]deltaRecord, error) {
	var out []deltaRecord
	var bases []string
	for {
		env, err := bundle.ReadDelta(r)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		var m *bundle.Manifest
		if trusted != nil {
			m, err = env.VerifyDelta(full, bases, trusted...)
		} else {
			m, err = env.Unverified()
		}
		if err != nil {
			return out, fmt.Errorf("delta %d: %w", len(out)+1, err)
		}
		bases = append(bases, m.BaseSHA256)
		rec := deltaRecord{Manifest: m, Offset: off, Size: bundle.DeltaRecordSize(env, m), Chunks: m.Chunks(), Verified: trusted != nil}
		if trusted != nil {
			err = bundle.VerifyCiphertext(r, m, fw, nil)
		} else {
			_, err = io.CopyN(io.Discard, r, m.CiphertextSize)
		}
		if err != nil {
			return out, fmt.Errorf("delta %d (from %s): %w", len(out)+1, m.BaseVersion, err)
		}
		out = append(out, rec)
		off += rec.Size
	}
}
