package cli

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/ecowatt/fota/internal/firmware"
)

const firmwareUsage = `Usage:
  fota firmware sample --version V [--size SIZE] [--lineage NAME] [--fail-selftest | --crash]
                       [--hardware esp32] [--project ecowatt] [--security-counter N] [--force] -o FILE

Writes a simulated EcoWatt application image: a valid ESP32 image (header,
app descriptor with version, project name and secure version, checksum and
SHA-256) whose payload tells the simulated device how it behaves on boot.
--hardware is the descriptor's chip and --security-counter its secure_version,
named as in 'fota release build' and 'fota device add' (--chip and
--secure-version, their old names, still work for now). The bytes that pad
an image to --size are random, seeded by the version; images given the same
--lineage share them instead, as releases of one product share most of
their code, so a delta patch between them (fota release build --delta-from)
is small.

Examples:
  fota firmware sample --version 1.0.4 -o app-1.0.4.bin
  fota firmware sample --version 1.0.5 --fail-selftest --size 1MiB -o app-1.0.5.bin
  fota firmware sample --version 1.0.6 --size 1MiB --lineage ecowatt -o app-1.0.6.bin
`

func runFirmware(e *env, args []string) error {
	return subcommand(e, "firmware", args, map[string]func(*env, []string) error{"sample": runFirmwareSample}, firmwareUsage)
}

func runFirmwareSample(e *env, args []string) error {
	fs := newFlags("firmware sample")
	version := fs.String("version", "", "firmware version (semantic version)")
	size := fs.String("size", "", "image size, e.g. 256KiB or 1MiB (default: a small image)")
	failSelfTest := fs.Bool("fail-selftest", false, "the image fails its self-test on boot")
	crash := fs.Bool("crash", false, "the image resets before it can confirm itself")
	chip := fs.String("hardware", "esp32", "chip the image is built for")
	fs.StringVar(chip, "chip", "esp32", "old name of --hardware")
	project := fs.String("project", "ecowatt", "project name in the app descriptor")
	secureVersion := fs.Uint("security-counter", 0, "secure_version (anti-rollback counter) in the app descriptor")
	fs.UintVar(secureVersion, "secure-version", 0, "old name of --security-counter")
	lineage := fs.String("lineage", "", "pad with the bytes of this product line (shared by every version given it) instead of the version's own")
	out := fs.String("o", "", "file to write")
	force := fs.Bool("force", false, "replace an existing file")
	rest, err := parseFlags(e, fs, firmwareUsage, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("fota firmware sample takes no arguments, got %q", rest)
	}
	if *version == "" || *out == "" {
		return &usageError{msg: "--version and -o are required", hint: "fota firmware sample --version 1.0.4 -o app.bin"}
	}
	if *failSelfTest && *crash {
		return usagef("--fail-selftest and --crash exclude each other")
	}
	n, err := parseSize(*size)
	if err != nil {
		return &usageError{msg: fmt.Sprintf("--size: %v", err), hint: "sizes look like 4096, 256KiB or 1MiB"}
	}
	behaviour := firmware.Healthy
	if *failSelfTest {
		behaviour = firmware.FailSelfTest
	} else if *crash {
		behaviour = firmware.Crash
	}
	img, err := firmware.Sample(firmware.SampleOptions{Version: *version, Project: *project, Chip: *chip,
		SecureVersion: uint32(*secureVersion), Size: n, Behaviour: behaviour, Lineage: *lineage})
	if err != nil {
		return err
	}
	err = writeAtomic(*out, 0o644, *force, func(f *os.File) error {
		_, err := f.Write(img)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s: %s %s for %s, %d bytes, %s\n", *out, *project, *version, *chip, len(img), behaviour)
	return nil
}

// parseSize reads "4096", "256KiB", "1MiB", "2GiB" (also KB/MB/K/M as powers of 1024).
func parseSize(s string) (int, error) {
	n, err := parseSizeUpTo(s, 1<<31)
	return int(n), err
}

// parseSizeUpTo is parseSize for sizes up to max bytes.
func parseSizeUpTo(s string, max int64) (int64, error) {
	if s == "" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}}
	digits, mult := s, int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			digits, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(digits), 10, 64)
	if err != nil || n <= 0 || n > max/mult {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	return n * mult, nil
}
