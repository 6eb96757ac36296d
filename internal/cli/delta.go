package cli

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/delta"
)

const deltaUsage = `Usage:
  fota delta create --from OLD.bin --to NEW.bin [--compression heatshrink|crle|none] [--force] -o PATCH
  fota delta apply  --from OLD.bin --patch PATCH [--expect-sha256 HEX] [--force] -o NEW.bin

create makes a detools sequential patch that turns OLD.bin (the image a device
runs) into NEW.bin, the format ESP32 devices apply with esp_delta_ota; it
prints the sizes and the patch's size as a share of NEW.bin. apply rebuilds
NEW.bin from OLD.bin and a patch. A raw patch does not name the image it was
made from: applied to another image it can make a wrong one without any
error, so give --expect-sha256 (create prints the new image's SHA-256) to
have the result checked; a release bundle's deltas carry the target's signed
SHA-256, which devices check.
--compression is heatshrink by default (detools' window 2^8, lookahead 2^7:
what esp_delta_ota decodes in a few hundred bytes of RAM); crle suits
images with long runs; none leaves the stream as it is.
Existing files are never replaced without --force.

Examples:
  fota delta create --from app-1.0.4.bin --to app-1.0.5.bin -o 1.0.4-1.0.5.patch
  fota delta apply --from app-1.0.4.bin --patch 1.0.4-1.0.5.patch --expect-sha256 5b1e... -o app-1.0.5.bin
`

func runDelta(e *env, args []string) error {
	return subcommand(e, "delta", args, map[string]func(*env, []string) error{
		"create": runDeltaCreate,
		"apply":  runDeltaApply,
	}, deltaUsage)
}

func runDeltaCreate(e *env, args []string) error {
	fs := newFlags("delta create")
	fromPath := fs.String("from", "", "image the device runs now")
	toPath := fs.String("to", "", "image to update it to")
	compression := fs.String("compression", "heatshrink", "patch compression: heatshrink, crle or none")
	out := fs.String("o", "", "patch file to write")
	force := fs.Bool("force", false, "replace an existing patch file")
	if err := parseNoArgs(e, fs, deltaUsage, args); err != nil {
		return err
	}
	if *fromPath == "" || *toPath == "" || *out == "" {
		return &usageError{msg: "--from, --to and -o are required", hint: "fota delta create --from old.bin --to new.bin -o p.patch"}
	}
	for _, p := range []string{*fromPath, *toPath} {
		if isBundle(p) {
			return withHint(fmt.Errorf("%s is a release bundle: its image is encrypted, and a patch between ciphertexts saves nothing", p),
				"diff the plain images (fota release verify --extract writes a bundle's), or use fota release build --delta-from")
		}
	}
	from, err := readImage(*fromPath)
	if err != nil {
		return err
	}
	to, err := readImage(*toPath)
	if err != nil {
		return err
	}
	patch, err := delta.Create(from, to, delta.CreateOptions{Compression: *compression})
	if err != nil {
		return err
	}
	err = writeAtomic(*out, 0o644, *force, func(f *os.File) error {
		_, err := f.Write(patch)
		return err
	})
	if err != nil {
		return err
	}
	share := "n/a (empty to image)"
	if len(to) > 0 {
		share = fmt.Sprintf("%.2f%% of to", 100*float64(len(patch))/float64(len(to)))
	}
	fmt.Fprintf(e.stdout, "wrote %s: from %d bytes, to %d bytes (sha256 %x), patch %d bytes (%s), compression %s\n",
		*out, len(from), len(to), sha256.Sum256(to), len(patch), share, *compression)
	if len(patch) >= len(to) {
		e.warn("the patch is no smaller than the new image: the images share little (encrypted or compressed files never do; diff the plain images)")
	}
	return nil
}

// readImage reads a whole image for diffing, refusing one too large for a
// detools patch before reading it.
func readImage(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size() > delta.MaxSize {
		return nil, fmt.Errorf("%s is %d bytes: delta patches are limited to %d bytes (128 MiB) an image", path, st.Size(), delta.MaxSize)
	}
	return os.ReadFile(path)
}

func runDeltaApply(e *env, args []string) error {
	fs := newFlags("delta apply")
	fromPath := fs.String("from", "", "image the patch was made from")
	patchPath := fs.String("patch", "", "patch made by 'fota delta create' or detools")
	out := fs.String("o", "", "image file to write")
	expect := fs.String("expect-sha256", "", "the new image's SHA-256 (hex), as create printed it: anything else is refused")
	force := fs.Bool("force", false, "replace an existing image file")
	if err := parseNoArgs(e, fs, deltaUsage, args); err != nil {
		return err
	}
	if *fromPath == "" || *patchPath == "" || *out == "" {
		return &usageError{msg: "--from, --patch and -o are required", hint: "fota delta apply --from old.bin --patch p.patch -o new.bin"}
	}
	var want []byte
	if *expect != "" {
		var err error
		if want, err = hex.DecodeString(strings.ToLower(*expect)); err != nil || len(want) != sha256.Size {
			return usagef("--expect-sha256 %q: want the 64 hex digits of a SHA-256", *expect)
		}
	}
	from, err := os.Open(*fromPath)
	if err != nil {
		return err
	}
	defer from.Close()
	st, err := from.Stat()
	if err != nil {
		return err
	}
	patch, err := os.Open(*patchPath)
	if err != nil {
		return err
	}
	defer patch.Close()
	var n int64
	err = writeAtomic(*out, 0o644, *force, func(f *os.File) error {
		// Buffered: a patch of many small chunks would otherwise cost a
		// write call per chunk.
		h := sha256.New()
		w := bufio.NewWriterSize(io.MultiWriter(f, h), 64<<10)
		n, err = delta.Apply(from, st.Size(), patch, w)
		if err != nil {
			return fmt.Errorf("applying %s to %s: %w", *patchPath, *fromPath, err)
		}
		if err := w.Flush(); err != nil {
			return err
		}
		if got := h.Sum(nil); want != nil && !bytes.Equal(got, want) {
			return withHint(fmt.Errorf("applying %s to %s made an image with SHA-256 %x, not the expected %x", *patchPath, *fromPath, got, want),
				"--from is not the image the patch was made from")
		}
		return nil
	})
	if errors.Is(err, delta.ErrCorrupt) {
		return withHint(err, "check that --from is the image the patch was made from, and that the patch file is complete")
	}
	if err != nil {
		return err
	}
	checked := "not checked: give --expect-sha256 to check it"
	if want != nil {
		checked = "matches --expect-sha256"
	}
	fmt.Fprintf(e.stdout, "wrote %s: %d bytes (%s)\n", *out, n, checked)
	return nil
}

// isBundle reports whether the file at path starts as a fota bundle does.
func isBundle(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [4]byte
	_, err = io.ReadFull(f, magic[:])
	return err == nil && string(magic[:]) == bundle.Magic
}
