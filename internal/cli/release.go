package cli

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/esp32"
	"github.com/ecowatt/fota/internal/update"
	"github.com/ecowatt/fota/keys"
)

const releaseUsage = `Usage:
  fota release build   [flags] [--delta-from BASE]... [-o OUT.fota] FIRMWARE.bin
  fota release verify  [flags] BUNDLE.fota
  fota release inspect [--json] BUNDLE.fota
  fota release publish --server URL --token T [--rollout all] BUNDLE.fota
  fota release list    --server URL --token T [--json]
  fota release withdraw --server URL --token T --version V [--hardware esp32] [--reason TEXT]
  fota release delete  --server URL --token T --version V [--hardware esp32]

build turns a firmware image into a signed, encrypted release bundle. For an
ESP32 application image the version, chip and project come from its app
descriptor; any other file needs --version and --hardware. -o defaults to
PRODUCT-VERSION.fota. --delta-from BASE (repeatable, up to 16) adds a delta
patch from BASE, an image devices run now: an earlier release's .fota, an
ESP32 image (its app descriptor says its version) or VERSION=IMAGE. A device
running exactly BASE is then sent the patch instead of the image; a base
whose patch would be no smaller than the image is left out, with a warning.
verify checks a bundle's structure, signature and hashes and, given the
firmware key, decrypts it and checks the firmware itself.
inspect prints what a bundle says about itself, without checking it.
publish uploads a bundle to the server, which verifies it before storing it.
A published release reaches no device until a rollout (fota rollout create)
or a pin offers it; --rollout all also starts a one-wave rollout to every
device of its hardware, taking them from older rollouts. list shows the
published releases and their deltas. withdraw stops offering a release at once:
downloads of it in progress end (the devices get 410 with --reason and keep
running the image they run), pins to it say it was withdrawn, and it stays
listed for history. delete removes a release and its ciphertext for good;
it is refused while a download of it is in progress (withdraw it first).
--server and --token default to FOTA_SERVER and FOTA_TOKEN.

Examples:
  fota release build --keys keys -o app-1.0.4.fota build/app.bin
  fota release build --keys keys --version 1.0.4 --hardware esp32 -o app-1.0.4.fota app.bin
  fota release build --keys keys --delta-from app-1.0.3.fota --delta-from 1.0.2=app-1.0.2.bin -o app-1.0.4.fota build/app.bin
  fota release verify --pub keys/signing.pub --firmware-key keys/firmware.key --extract out.bin app-1.0.4.fota
  fota release inspect --json app-1.0.4.fota
`

func runRelease(e *env, args []string) error {
	return subcommand(e, "release", args, map[string]func(*env, []string) error{
		"build":    runReleaseBuild,
		"verify":   runReleaseVerify,
		"inspect":  runReleaseInspect,
		"publish":  runReleasePublish,
		"list":     runReleaseList,
		"withdraw": runReleaseWithdraw,
		"delete":   runReleaseDelete,
	}, releaseUsage)
}

// keyPaths resolves --keys DIR and the explicit per-file flags, which win.
func keyPaths(dir, explicit, name string) string {
	if explicit != "" || dir == "" {
		return explicit
	}
	return filepath.Join(dir, name)
}

func loadPrivate[T any](e *env, path string, load func(string) (T, error)) (T, error) {
	if w := keys.PermissionWarning(path); w != "" {
		e.warn("%s", w)
	}
	return load(path)
}

func runReleaseBuild(e *env, args []string) error {
	fs := newFlags("release build")
	keyDir := fs.String("keys", "", "key folder made by 'fota keys init' (signing.key, firmware.key)")
	signingPath := fs.String("signing-key", "", "signing key file (default: KEYS/signing.key)")
	firmwarePath := fs.String("firmware-key", "", "firmware key file (default: KEYS/firmware.key)")
	out := fs.String("o", "", "bundle file to write (default: PRODUCT-VERSION.fota)")
	version := fs.String("version", "", "release version (semantic version; default: from the ESP32 app descriptor)")
	hardware := fs.String("hardware", "", "hardware the release is for (default: the ESP32 image's chip)")
	product := fs.String("product", "", "product name (default: the ESP32 image's project name)")
	counter := fs.Int64("security-counter", -1, "anti-rollback security counter (default: the ESP32 image's secure_version, else 0)")
	chunkSize := fs.Int("chunk-size", bundle.DefaultChunkSize, "bytes per download chunk")
	notes := fs.String("notes", "", "release notes stored in the manifest")
	force := fs.Bool("force", false, "replace an existing bundle; accept flags that disagree with the app descriptor")
	var deltaFrom stringList
	fs.Var(&deltaFrom, "delta-from", "add a delta from this base: an earlier release's .fota, an ESP32 image, or VERSION=IMAGE (repeatable)")
	deltaCompression := fs.String("delta-compression", "heatshrink", "compression of the delta patches: heatshrink, crle or none")
	rest, err := parseFlags(e, fs, releaseUsage, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return &usageError{msg: "fota release build needs exactly one firmware file", hint: "fota release build --keys keys -o app.fota build/app.bin"}
	}
	fwPath := rest[0]
	sp, fp := keyPaths(*keyDir, *signingPath, keys.SigningKeyFile), keyPaths(*keyDir, *firmwarePath, keys.FirmwareKeyFile)
	if sp == "" || fp == "" {
		return &usageError{msg: "no keys given", hint: "pass --keys DIR (from 'fota keys init'), or --signing-key and --firmware-key"}
	}
	if *counter < -1 || *counter > 1<<32-1 {
		return usagef("--security-counter %d is out of range (0 to 4294967295)", *counter)
	}

	firmware, err := os.Open(fwPath)
	if err != nil {
		return fmt.Errorf("open firmware: %w", err)
	}
	defer firmware.Close()
	opts := bundle.BuildOptions{Version: *version, Hardware: *hardware, Product: *product, ChunkSize: *chunkSize, Notes: *notes}
	ecowattCaveat, err := fillFromDescriptor(firmware, fwPath, &opts, *counter, *force)
	if err != nil {
		return err
	}
	if _, err := firmware.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("read firmware: %w", err)
	}

	if opts.Signer, err = loadPrivate(e, sp, keys.LoadSigningKey); err != nil {
		return err
	}
	if opts.FirmwareKey, err = loadPrivate(e, fp, keys.LoadFirmwareKey); err != nil {
		return err
	}
	if len(deltaFrom) > bundle.MaxDeltas {
		return usagef("%d --delta-from bases; a bundle holds at most %d deltas", len(deltaFrom), bundle.MaxDeltas)
	}
	if len(deltaFrom) > 0 && !slices.Contains(bundle.DeltaCompressions, *deltaCompression) {
		return usagef("--delta-compression %q: want one of %s", *deltaCompression, strings.Join(bundle.DeltaCompressions, ", "))
	}
	var bases []*deltaBase
	var target []byte
	for _, arg := range deltaFrom {
		b, err := loadDeltaBase(arg, opts.Signer, opts.FirmwareKey, opts.Hardware, opts.Product)
		if err != nil {
			return err
		}
		bases = append(bases, b)
	}
	if len(bases) > 0 {
		if target, err = readImage(fwPath); err != nil {
			return err
		}
	}
	if *out == "" {
		*out = opts.Product + "-" + opts.Version + ".fota"
	}
	opts.TempDir = filepath.Dir(*out)
	var m *bundle.Manifest
	var deltas []*bundle.Manifest
	err = writeAtomic(*out, 0o644, *force, func(f *os.File) error {
		var err error
		if m, err = bundle.Build(f, firmware, opts); err != nil || len(bases) == 0 {
			return err
		}
		w := bufio.NewWriterSize(f, 64<<10)
		if deltas, err = appendDeltas(e, w, m, target, bases, *deltaCompression, opts.Signer, opts.FirmwareKey); err != nil {
			return err
		}
		return w.Flush()
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "built %s: %s %s for %s, %d bytes firmware, %d chunks of %d, security counter %d, signed by %s (%s)\n",
		*out, m.Product, m.Version, m.Hardware, m.PlaintextSize, m.Chunks(), m.ChunkSize, m.SecurityCounter, m.KeyID, m.SignatureAlg)
	for _, d := range deltas {
		fmt.Fprintf(e.stdout, "  delta from %s (sha256 %.12s…): %s patch %d bytes, %.1f%% of the image, %d chunks\n",
			d.BaseVersion, d.BaseSHA256, d.Compression, d.PatchSize, 100*float64(d.PatchSize)/float64(m.PlaintextSize), d.Chunks())
	}
	if m.ChunkSize > update.MaxLegacyChunkSize {
		e.warn("%s is native-only: its %d-byte chunks are larger than the %d bytes the original EcoWatt firmware takes, "+
			"so the server offers it only on the native API (/v1); build with --chunk-size %d for EcoWatt-API devices",
			*out, m.ChunkSize, update.MaxLegacyChunkSize, update.MaxLegacyChunkSize)
	} else if ok, why := update.LegacyServable(&fota.Release{Version: m.Version, ChunkSize: m.ChunkSize, SignatureAlg: m.SignatureAlg,
		LegacySignature: legacySignatureOf(m)}); !ok {
		e.warn("%s is native-only: %s", *out, why)
	} else if ecowattCaveat != "" {
		e.warn("%s: %s", *out, ecowattCaveat)
	}
	if n := m.EncodedSize(); n > CClientManifestMax {
		e.warn("%s: its manifest is %d bytes (%d of release notes); devices running the C client (clients/c) with the "+
			"default 4 KiB work buffer take manifests up to %d bytes: shorten --notes, or give those devices a larger work buffer",
			*out, n, len(m.Notes), CClientManifestMax)
	}
	return nil
}

// CClientManifestMax is the largest manifest the C client takes with its
// smallest work buffer (FOTA_WORK_MIN, 4 KiB) and an RSA-4096 signature;
// clients/c's TestManifestLimit holds it to that.
const CClientManifestMax = 1536

// legacySignatureOf stands for whether a build has a legacy signature:
// bundle.Build makes one exactly for RSA keys.
func legacySignatureOf(m *bundle.Manifest) []byte {
	if strings.HasPrefix(m.SignatureAlg, "rsa") {
		return []byte{1}
	}
	return nil
}

// fillFromDescriptor takes version, hardware, product and security counter
// from an ESP32 app descriptor, refusing flags that contradict it unless
// forced. It returns why fota devices on the EcoWatt API, which trust only
// the descriptor, will refuse the image, or "".
func fillFromDescriptor(r io.Reader, path string, o *bundle.BuildOptions, counter int64, force bool) (string, error) {
	info, err := esp32.ReadInfo(r)
	if errors.Is(err, esp32.ErrNotESP32) {
		var missing []string
		if o.Version == "" {
			missing = append(missing, "--version")
		}
		if o.Hardware == "" {
			missing = append(missing, "--hardware")
		}
		if len(missing) > 0 {
			return "", withHint(fmt.Errorf("%s is not an ESP32 app image (%v), so it does not say its version or hardware", path, err),
				"pass "+strings.Join(missing, " and ")+", e.g. --version 1.0.4 --hardware esp32")
		}
		if o.Product == "" {
			o.Product = productFromPath(path)
		}
		if counter >= 0 {
			o.SecurityCounter = uint32(counter)
		}
		return "it is not an ESP32 app image, so fota devices on the EcoWatt API (which trust version and chip only from the " +
			"image's app descriptor) will refuse it; native-API devices take it", nil
	}
	if err != nil {
		return "", err
	}
	conflict := func(flag, given, image string) error {
		if given == "" || given == image || force {
			return nil
		}
		return withHint(fmt.Errorf("%s %s disagrees with the image's app descriptor, which says %q", flag, given, image),
			"rebuild the firmware with the right value, or pass --force to override the descriptor")
	}
	for _, c := range []struct{ flag, given, image string }{
		{"--version", o.Version, info.Version},
		{"--hardware", o.Hardware, info.Chip},
		{"--product", o.Product, info.ProjectName},
	} {
		if err := conflict(c.flag, c.given, c.image); err != nil {
			return "", err
		}
	}
	if counter >= 0 {
		if err := conflict("--security-counter", fmt.Sprint(counter), fmt.Sprint(info.SecureVersion)); err != nil {
			return "", err
		}
		o.SecurityCounter = uint32(counter)
	} else {
		o.SecurityCounter = info.SecureVersion
	}
	caveat := ""
	if (o.Version != "" && o.Version != info.Version) || (o.Hardware != "" && o.Hardware != info.Chip) {
		caveat = fmt.Sprintf("--force overrode the app descriptor (%s for %s), which fota devices on the EcoWatt API trust "+
			"instead of the release's labels: they will refuse this release; native-API devices take it", info.Version, info.Chip)
	}
	if o.Version == "" {
		o.Version = info.Version
	}
	if o.Hardware == "" {
		o.Hardware = info.Chip
	}
	if o.Product == "" {
		o.Product = info.ProjectName
		if o.Product == "" {
			o.Product = productFromPath(path)
		}
	}
	return caveat, nil
}

// productFromPath names a product after its file: "build/app.bin" is "app".
func productFromPath(path string) string {
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	var b strings.Builder
	for _, c := range base {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteRune(c)
		}
	}
	if b.Len() == 0 {
		return "firmware"
	}
	return b.String()
}

func openBundle(path string) (*os.File, *bundle.Envelope, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open bundle: %w", err)
	}
	env, err := bundle.ReadEnvelope(bufio.NewReaderSize(io.LimitReader(f, bundle.HeaderSize+bundle.MaxManifestSize+2*bundle.MaxSignatureSize), 4096))
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := f.Seek(env.PayloadOffset(), io.SeekStart); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, env, nil
}

func runReleaseVerify(e *env, args []string) error {
	fs := newFlags("release verify")
	keyDir := fs.String("keys", "", "key folder: uses signing.pub, and firmware.key when present")
	var pubs stringList
	fs.Var(&pubs, "pub", "trusted public key file (repeatable)")
	firmwarePath := fs.String("firmware-key", "", "firmware key file: also decrypt and check the firmware")
	extract := fs.String("extract", "", "write the decrypted firmware to this file (needs the firmware key)")
	force := fs.Bool("force", false, "replace an existing --extract file")
	rest, err := parseFlags(e, fs, releaseUsage, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return &usageError{msg: "fota release verify needs exactly one bundle", hint: "fota release verify --pub keys/signing.pub app.fota"}
	}
	if *keyDir != "" {
		if len(pubs) == 0 {
			pubs = append(pubs, filepath.Join(*keyDir, keys.PublicKeyFile))
		}
		if *firmwarePath == "" {
			if p := filepath.Join(*keyDir, keys.FirmwareKeyFile); fileExists(p) {
				*firmwarePath = p
			}
		}
	}
	if len(pubs) == 0 {
		return &usageError{msg: "no public key given", hint: "pass --pub keys/signing.pub (or --keys DIR)"}
	}
	if *extract != "" && *firmwarePath == "" {
		return &usageError{msg: "--extract needs the firmware key to decrypt", hint: "add --firmware-key keys/firmware.key"}
	}
	var trusted []*keys.PublicKey
	for _, p := range pubs {
		k, err := keys.LoadPublicKey(p)
		if err != nil {
			return err
		}
		trusted = append(trusted, k)
	}
	var fwKey *keys.FirmwareKey
	if *firmwarePath != "" {
		k, err := loadPrivate(e, *firmwarePath, keys.LoadFirmwareKey)
		if err != nil {
			return err
		}
		fwKey = &k
	}

	path := rest[0]
	f, env, err := openBundle(path)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := env.Verify(trusted...)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	payload := bufio.NewReaderSize(f, 64<<10)
	if *extract != "" {
		err = writeAtomic(*extract, 0o600, *force, func(out *os.File) error {
			w := bufio.NewWriterSize(out, 64<<10)
			if err := bundle.VerifyCiphertext(payload, m, fwKey, w); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			return w.Flush()
		})
	} else if err = bundle.VerifyCiphertext(payload, m, fwKey, nil); err != nil {
		err = fmt.Errorf("%s: %w", path, err)
	}
	if err != nil {
		return err
	}
	deltas, err := readDeltaRecords(payload, env.PayloadOffset()+m.CiphertextSize, m, trusted, fwKey)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	what := "signature, ciphertext sha256"
	if env.LegacySignature != nil {
		what += ", legacy signature"
	}
	if fwKey != nil {
		what += ", decryption, plaintext size and sha256"
	}
	fmt.Fprintf(e.stdout, "ok %s: %s %s for %s, signed by %s (%s); checked %s\n",
		path, m.Product, m.Version, m.Hardware, m.KeyID, m.SignatureAlg, what)
	for _, d := range deltas {
		what := "signature, ciphertext sha256"
		if fwKey != nil {
			what += ", decryption and patch size (the image it makes is checked on the device, which has the base)"
		}
		fmt.Fprintf(e.stdout, "ok delta from %s (sha256 %.12s…): checked %s\n", d.Manifest.BaseVersion, d.Manifest.BaseSHA256, what)
	}
	if *extract != "" {
		fmt.Fprintf(e.stdout, "wrote %s (%d bytes)\n", *extract, m.PlaintextSize)
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// inspection is the --json form of fota release inspect.
type inspection struct {
	File            string `json:"file"`
	FileSize        int64  `json:"file_size"`
	PayloadOffset   int64  `json:"payload_offset"`
	Complete        bool   `json:"complete"`
	Verified        bool   `json:"verified"`
	Chunks          int    `json:"chunks"`
	Signature       string `json:"signature"`
	LegacySignature string `json:"legacy_signature,omitempty"`
	// LegacyAPI: the server can serve it on the EcoWatt API; if not,
	// NativeOnlyReason says why.
	LegacyAPI        bool             `json:"legacy_api"`
	NativeOnlyReason string           `json:"native_only_reason,omitempty"`
	Manifest         *bundle.Manifest `json:"manifest"`
	Deltas           []deltaRecord    `json:"deltas,omitempty"`
}

func runReleaseInspect(e *env, args []string) error {
	fs := newFlags("release inspect")
	asJSON := fs.Bool("json", false, "print the manifest and envelope as JSON")
	rest, err := parseFlags(e, fs, releaseUsage, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return &usageError{msg: "fota release inspect needs exactly one bundle", hint: "fota release inspect app.fota"}
	}
	path := rest[0]
	f, env, err := openBundle(path)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := env.Unverified()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	in := inspection{
		File: path, FileSize: st.Size(), PayloadOffset: env.PayloadOffset(),
		Chunks: m.Chunks(), Signature: base64.StdEncoding.EncodeToString(env.Signature), Manifest: m,
	}
	end := env.PayloadOffset() + m.CiphertextSize
	var deltaErr error
	if _, err := f.Seek(end, io.SeekStart); err == nil {
		in.Deltas, deltaErr = readDeltaRecords(bufio.NewReaderSize(f, 64<<10), end, m, nil, nil)
	}
	for _, d := range in.Deltas {
		end = d.Offset + d.Size
	}
	in.Complete = deltaErr == nil && st.Size() == end
	if env.LegacySignature != nil {
		in.LegacySignature = base64.StdEncoding.EncodeToString(env.LegacySignature)
	}
	in.LegacyAPI, in.NativeOnlyReason = update.LegacyServable(&fota.Release{Version: m.Version, ChunkSize: m.ChunkSize,
		SignatureAlg: m.SignatureAlg, LegacySignature: env.LegacySignature})
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(in)
	}
	w := e.stdout
	fmt.Fprintf(w, "bundle          %s (%d bytes, format %d)\n", path, st.Size(), m.Format)
	fmt.Fprintf(w, "product         %s\n", m.Product)
	fmt.Fprintf(w, "version         %s\n", m.Version)
	fmt.Fprintf(w, "hardware        %s\n", m.Hardware)
	fmt.Fprintf(w, "security        counter %d\n", m.SecurityCounter)
	fmt.Fprintf(w, "firmware        %d bytes, sha256 %s\n", m.PlaintextSize, m.PlaintextSHA256)
	fmt.Fprintf(w, "payload         %s, %d bytes at offset %d, sha256 %s\n", m.Cipher, m.CiphertextSize, env.PayloadOffset(), m.CiphertextSHA256)
	fmt.Fprintf(w, "iv              %s\n", m.IV)
	fmt.Fprintf(w, "chunks          %d of %d bytes\n", m.Chunks(), m.ChunkSize)
	fmt.Fprintf(w, "created         %s\n", m.Created.Format("2006-01-02 15:04:05 UTC"))
	fmt.Fprintf(w, "signed by       %s (%s)\n", m.KeyID, m.SignatureAlg)
	legacy := "none (only the native API can serve this release)"
	if env.LegacySignature != nil {
		legacy = fmt.Sprintf("RSA PKCS#1 v1.5 over the firmware sha256, %d bytes (EcoWatt-compatible API)", len(env.LegacySignature))
	}
	fmt.Fprintf(w, "legacy sig      %s\n", legacy)
	ecowatt := "yes"
	if !in.LegacyAPI {
		ecowatt = "no: " + in.NativeOnlyReason
	}
	fmt.Fprintf(w, "ecowatt api     %s\n", ecowatt)
	if m.Notes != "" {
		fmt.Fprintf(w, "notes           %s\n", m.Notes)
	}
	for _, d := range in.Deltas {
		dm := d.Manifest
		fmt.Fprintf(w, "delta           from %s (%d bytes, sha256 %s): %s patch %d bytes (%.1f%% of the image), %d bytes encrypted in %d chunks\n",
			dm.BaseVersion, dm.BaseSize, dm.BaseSHA256, dm.Compression, dm.PatchSize, 100*float64(dm.PatchSize)/float64(m.PlaintextSize),
			dm.CiphertextSize, d.Chunks)
	}
	if len(in.Deltas) == 0 {
		fmt.Fprintf(w, "deltas          none (every device downloads the full image)\n")
	}
	switch {
	case deltaErr != nil:
		fmt.Fprintf(w, "WARNING         after the payload: %v\n", deltaErr)
	case !in.Complete:
		fmt.Fprintf(w, "WARNING         file is %d bytes, the manifest describes %d: truncated or padded\n", st.Size(), end)
	}
	fmt.Fprintf(w, "NOT VERIFIED    inspect does not check signatures; run: fota release verify --pub KEY %s\n", path)
	return nil
}
