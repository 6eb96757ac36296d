package cli

import (
	"bufio"
	"errors"
	"fmt"
	"os"

	"github.com/ecowatt/fota/delta"
)

const deltaUsage = `Usage:
  fota delta create --from OLD.bin --to NEW.bin [--compression heatshrink|crle|none] [--force] -o PATCH
  fota delta apply  --from OLD.bin --patch PATCH [--force] -o NEW.bin

create makes a detools sequential patch that turns OLD.bin (the image a device
runs) into NEW.bin, the format ESP32 devices apply with esp_delta_ota; it
prints the sizes and the patch's size as a share of NEW.bin. apply rebuilds
NEW.bin from OLD.bin and a patch, refusing a patch made for another image.
--compression is heatshrink by default (detools' window 2^8, lookahead 2^7:
what esp_delta_ota decodes in a few hundred bytes of RAM); crle suits
images with long runs; none leaves the stream as it is.
Existing files are never replaced without --force.

Examples:
  fota delta create --from app-1.0.4.bin --to app-1.0.5.bin -o 1.0.4-1.0.5.patch
  fota delta apply --from app-1.0.4.bin --patch 1.0.4-1.0.5.patch -o app-1.0.5.bin
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
	fmt.Fprintf(e.stdout, "wrote %s: from %d bytes, to %d bytes, patch %d bytes (%s), compression %s\n",
		*out, len(from), len(to), len(patch), share, *compression)
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
	force := fs.Bool("force", false, "replace an existing image file")
	if err := parseNoArgs(e, fs, deltaUsage, args); err != nil {
		return err
	}
	if *fromPath == "" || *patchPath == "" || *out == "" {
		return &usageError{msg: "--from, --patch and -o are required", hint: "fota delta apply --from old.bin --patch p.patch -o new.bin"}
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
		w := bufio.NewWriterSize(f, 64<<10)
		n, err = delta.Apply(from, st.Size(), patch, w)
		if err != nil {
			return fmt.Errorf("applying %s to %s: %w", *patchPath, *fromPath, err)
		}
		return w.Flush()
	})
	if errors.Is(err, delta.ErrCorrupt) {
		return withHint(err, "check that --from is the image the patch was made from, and that the patch file is complete")
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s: %d bytes\n", *out, n)
	return nil
}
