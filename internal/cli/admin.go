package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/internal/web"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

// serverFlags adds --server and --token, defaulting to FOTA_SERVER and FOTA_TOKEN.
func serverFlags(fs *flag.FlagSet) (server, token *string) {
	server, token = new(string), new(string)
	*server, *token = os.Getenv("FOTA_SERVER"), os.Getenv("FOTA_TOKEN")
	fs.Var(envDefault{server}, "server", "server URL (default $FOTA_SERVER)")
	fs.Var(envDefault{token}, "token", "admin token (default $FOTA_TOKEN)")
	return server, token
}

// envDefault is a string flag whose default comes from the environment and
// is never printed: --help must not show an admin token's value.
type envDefault struct{ p *string }

func (e envDefault) String() string     { return "" }
func (e envDefault) Set(v string) error { *e.p = v; return nil }

func adminClient(server, token string) (*client.Admin, error) {
	if server == "" {
		return nil, &usageError{msg: "no server given", hint: "pass --server http://127.0.0.1:8080 or set FOTA_SERVER"}
	}
	if token == "" {
		return nil, &usageError{msg: "no admin token given", hint: "pass --token or set FOTA_TOKEN ('fota token create --data DIR --name NAME' makes one)"}
	}
	return client.NewAdmin(server, token)
}

func runReleasePublish(e *env, args []string) error {
	fs := newFlags("release publish")
	server, token := serverFlags(fs)
	rollout := fs.String("rollout", "", "all: also start a one-wave rollout to every device of the hardware (superseding)")
	rest, err := parseFlags(e, fs, releaseUsage, args)
	if err != nil {
		return err
	}
	if *rollout != "" && *rollout != "all" {
		return &usageError{msg: fmt.Sprintf("--rollout %q: the only rollout publish makes is all", *rollout),
			hint: "publish, then fota rollout create --release VERSION --waves ... for waves"}
	}
	if len(rest) != 1 {
		return &usageError{msg: "fota release publish needs exactly one bundle", hint: "fota release publish --server URL --token T app-1.0.4.fota"}
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	f, err := os.Open(rest[0])
	if err != nil {
		return fmt.Errorf("open bundle: %w", err)
	}
	defer f.Close()
	// A firmware image instead of a bundle is the likeliest mistake: say so
	// before uploading it.
	magic := make([]byte, len(bundle.Magic))
	if _, err := io.ReadFull(f, magic); err != nil || string(magic) != bundle.Magic {
		return withHint(fmt.Errorf("%s is not a fota bundle", rest[0]),
			fmt.Sprintf("build one from the firmware first: fota release build --keys keys -o app.fota %s", rest[0]))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("read %s: %w", rest[0], err)
	}
	r, err := a.PublishRollout(e.ctx, f, *rollout)
	if err != nil {
		return fmt.Errorf("publish %s: %w", rest[0], err)
	}
	api := "native and EcoWatt-compatible APIs"
	if !r.LegacyAPI {
		api = "native API only"
		if r.NativeOnlyReason != "" {
			api += ": " + r.NativeOnlyReason
		}
	}
	fmt.Fprintf(e.stdout, "published %s %s for %s: %d bytes, %d chunks, signed by %s; served on the %s\n",
		r.Product, r.Version, r.Hardware, r.PlaintextSize, r.Chunks, r.KeyID, api)
	if len(r.Deltas) > 0 {
		fmt.Fprintf(e.stdout, "deltas for native-API devices running %s\n", deltaList(r.Deltas))
	}
	if r.RolloutID != 0 {
		fmt.Fprintf(e.stdout, "rollout %d: %s to every %s device, taking them over from earlier rollouts (fota rollout show %d)\n",
			r.RolloutID, r.Version, r.Hardware, r.RolloutID)
	} else {
		fmt.Fprintf(e.stdout, "no device is offered it yet: fota rollout create --release %s (or publish with --rollout all)\n", r.Version)
	}
	return nil
}

func runReleaseList(e *env, args []string) error {
	fs := newFlags("release list")
	server, token := serverFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(e, fs, releaseUsage, args); err != nil {
		return err
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	rels, err := a.Releases(e.ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e, rels)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tHARDWARE\tPRODUCT\tSIZE\tCHUNKS\tCOUNTER\tKEY\tLEGACY API\tDELTAS FROM\tPUBLISHED\tSTATUS")
	for _, r := range rels {
		status := "published"
		if !r.Withdrawn.IsZero() {
			status = "withdrawn " + r.Withdrawn.Local().Format(time.DateTime)
		}
		bases := "-"
		if len(r.Deltas) > 0 {
			var vs []string
			for _, d := range r.Deltas {
				vs = append(vs, shown(d.BaseVersion))
			}
			bases = strings.Join(vs, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%v\t%s\t%s\t%s\n", shown(r.Version), shown(r.Hardware), shown(r.Product), r.PlaintextSize, r.Chunks,
			r.SecurityCounter, r.KeyID, yesNo(r.LegacyAPI), bases, r.Published.Local().Format(time.DateTime), status)
	}
	return tw.Flush()
}

// deltaList says which bases a release has deltas from, and their sizes.
func deltaList(ds []protocol.ReleaseDelta) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, fmt.Sprintf("%s (%s %s patch)", shown(d.BaseVersion), web.FormatBytes(d.CiphertextSize), d.Compression))
	}
	return strings.Join(parts, ", ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func printJSON(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

const deviceUsage = `Usage:
  fota device add     --id ID --hardware esp32 --version 1.0.3 --credentials dev.json
                      [--api native|ecowatt|both] [--keys-h dev_keys.h --keys keys] [--device-url URL]
                      [--ecowatt-keys PROJECT --keys keys] [--security-counter N] [--force]
                      [--label key=value ...]
  fota device list    [--json]
  fota device show    --id ID
  fota device set     --id ID --api native|ecowatt|both
  fota device label   --id ID key=value ... [--remove key ...]
  fota device assign  --id ID (--version V | --unpin)
  fota device backoff --id ID [--clear]
  fota device remove  --id ID
  fota device run     --credentials dev.json --keys-h dev_keys.h --state DIR --version 1.0.3 [...]

add registers a device with a new random key and writes it, once, to a
credentials file (device id, key, server URL; mode 0600) and, with --keys-h,
to a C header for the ESP32 build holding DEVICE_ID, HMAC_PSK,
SERVER_PUBLIC_KEY and AES_FIRMWARE_KEY (from --keys; the server never has
the firmware key) and OTA_SERVER_URL: --device-url, the address devices
reach the server at, when it is not --server's. With --ecowatt-keys PROJECT it writes the original EcoWatt
firmware project's include/application/keys.h and src/application/keys.cpp
(extern declarations and their definitions, as that project has them), so
the firmware builds unchanged; such a device's --api defaults to ecowatt.

--api is the device's API policy: which device APIs may act for it.
native (the default) is the authenticated API; ecowatt is the original
EcoWatt firmware's API, whose requests cannot be authenticated; both allows
either. A device whose policy excludes ecowatt gets 403 on every /ota/*
request. set changes the policy (sessions on an API it no longer allows end).

label sets labels (key=value) and removes them (--remove key); rollouts
select devices by label (fota rollout --help). A device that comes to match
a rollout's selector joins it. list and show print labels; show also what
the device reports about itself (chip, slot size, free flash, agent).

assign pins a device to a release (a pin wins over rollouts); --unpin
releases it. backoff lists the
releases held back from a device on the EcoWatt API after it reported a
failure (1 h, doubling to 24 h); --clear offers them again at its next check
and resets its EcoWatt-API session rate limit (a fota agent still refuses a
release it rolled back from itself).
remove removes a device for good: its update sessions end and its key stops
working at once (within a second on other replicas); its history stays
readable (fota device show) until retention prunes it, and its id is not
registered again until then.
These take --server and --token (or FOTA_SERVER and FOTA_TOKEN).
run runs a simulated EcoWatt device ('fota device run --help').

Examples:
  fota device add --id ESP32_EcoWatt_Smart --hardware esp32 --version 1.0.3 \
                  --credentials dev.json --keys-h dev_keys.h --keys keys
  fota device add --id legacy-1 --hardware esp32 --version 1.0.3 --credentials legacy-1.json \
                  --ecowatt-keys ../EcoWatt --keys keys
  fota device set --id legacy-1 --api both
  fota device assign --id ESP32_EcoWatt_Smart --version 1.0.4
`

func runDevice(e *env, args []string) error {
	return subcommand(e, "device", args, map[string]func(*env, []string) error{
		"add": runDeviceAdd, "list": runDeviceList, "show": runDeviceShow, "set": runDeviceSet, "assign": runDeviceAssign,
		"backoff": runDeviceBackoff, "remove": runDeviceRemove, "run": runDeviceRun, "label": runDeviceLabel,
	}, deviceUsage)
}

// Credentials is the file `fota device add` writes for a device.
type Credentials struct {
	DeviceID string `json:"device_id"`
	PSK      string `json:"psk"`
	Server   string `json:"server"`
	Hardware string `json:"hardware"`
}

func runDeviceAdd(e *env, args []string) error {
	fs := newFlags("device add")
	server, token := serverFlags(fs)
	id := fs.String("id", "", "device id (1-64 of A-Z a-z 0-9 _ . -)")
	hardware := fs.String("hardware", "", "hardware, e.g. esp32")
	version := fs.String("version", "", "firmware version the device runs now")
	counter := fs.Uint("security-counter", 0, "security counter the device stores now")
	api := fs.String("api", "native", "API policy: native, ecowatt (the original EcoWatt firmware; the default with --ecowatt-keys) or both")
	ecowattDir := fs.String("ecowatt-keys", "", "write the device's keys into the original EcoWatt firmware project at DIR "+
		"(include/application/keys.h, src/application/keys.cpp; needs --keys)")
	credPath := fs.String("credentials", "", "write the device's credentials JSON here (mode 0600)")
	headerPath := fs.String("keys-h", "", "write a keys.h for the device's ESP32 build here (needs --keys)")
	keyDir := fs.String("keys", "", "key folder (signing.pub, firmware.key) for --keys-h and --ecowatt-keys")
	deviceURL := fs.String("device-url", "", "the server URL the device uses, written to the credentials, keys.h and the EcoWatt keys (default: --server)")
	force := fs.Bool("force", false, "replace existing output files")
	var labelArgs stringList
	fs.Var(&labelArgs, "label", "label the device, key=value (repeat for several), e.g. --label ring=canary")
	rest, err := parseFlags(e, fs, deviceUsage, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("fota device add takes no arguments, got %q", rest)
	}
	if *id == "" || *hardware == "" || *version == "" {
		return &usageError{msg: "--id, --hardware and --version are required", hint: "fota device add --id dev1 --hardware esp32 --version 1.0.3 --credentials dev1.json"}
	}
	labels, err := fota.ParseLabels(labelArgs)
	if err != nil {
		return usagef("--label: %s", fota.ErrorMessage(err))
	}
	apiSet := false
	fs.Visit(func(f *flag.Flag) { apiSet = apiSet || f.Name == "api" })
	if *ecowattDir != "" && !apiSet {
		*api = fota.APIEcoWatt // the original firmware speaks only the EcoWatt API
	}
	if !fota.ValidAPIPolicy(*api) {
		return usagef("--api %q: want native, ecowatt or both", *api)
	}
	if *ecowattDir != "" && *api == fota.APINative {
		return &usageError{msg: "--ecowatt-keys is for the original EcoWatt firmware, which speaks only the EcoWatt API; --api native would refuse it",
			hint: "leave out --api, or give --api ecowatt or both"}
	}
	if *credPath == "" && *headerPath == "" && *ecowattDir == "" {
		return &usageError{msg: "the device key is shown only once: give --credentials, --keys-h and/or --ecowatt-keys to keep it"}
	}
	if (*headerPath != "" || *ecowattDir != "") && *keyDir == "" {
		return &usageError{msg: "--keys-h and --ecowatt-keys need --keys DIR", hint: "the key files embed DIR/signing.pub and DIR/firmware.key"}
	}
	// Check every output before the device exists: its key cannot be shown again.
	for _, p := range []string{*credPath, *headerPath} {
		if p == "" || *force {
			continue
		}
		if _, err := os.Lstat(p); err == nil {
			return withHint(fmt.Errorf("%s already exists", p), "use --force to replace it, or another file name")
		}
		if _, err := os.Stat(filepath.Dir(p)); err != nil {
			return fmt.Errorf("cannot write %s: %w", p, err)
		}
	}
	var ecowatt *ecoWattExport
	if *ecowattDir != "" {
		if ecowatt, err = prepareEcoWattKeys(e, *ecowattDir, *keyDir, *force); err != nil {
			return err
		}
	}
	var pub *keys.PublicKey
	var fwKey keys.FirmwareKey
	if *headerPath != "" {
		if pub, err = keys.LoadPublicKey(filepath.Join(*keyDir, keys.PublicKeyFile)); err != nil {
			return err
		}
		if fwKey, err = loadPrivate(e, filepath.Join(*keyDir, keys.FirmwareKeyFile), keys.LoadFirmwareKey); err != nil {
			return err
		}
	}
	if *deviceURL == "" {
		*deviceURL = *server
	}
	if (*headerPath != "" || *ecowattDir != "") && loopbackURL(*deviceURL) {
		fmt.Fprintf(e.stderr, "warning: the device's server URL %s is this machine's loopback address, which a device on the network cannot reach; "+
			"give the address devices use with --device-url\n", *deviceURL)
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	d, err := a.AddDevice(e.ctx, protocol.AddDevice{ID: *id, Hardware: *hardware, Version: *version, SecurityCounter: uint32(*counter),
		API: *api, Labels: labels})
	if err != nil {
		return fmt.Errorf("add device %s: %w", *id, err)
	}
	if *credPath != "" {
		b, _ := json.MarshalIndent(Credentials{DeviceID: d.ID, PSK: d.PSK, Server: *deviceURL, Hardware: d.Hardware}, "", "  ")
		if err := keys.WriteFile(*credPath, append(b, '\n'), keys.PrivateMode, *force); err != nil {
			return withHint(err, "the device was registered but its key could not be saved; register it again under another id")
		}
		fmt.Fprintf(e.stdout, "wrote %s\n", *credPath)
	}
	if *headerPath != "" {
		header := keys.DeviceHeader(pub, fwKey, []keys.CDefinition{
			{Name: "DEVICE_ID", Comment: "This device's id.", String: d.ID},
			{Name: "HMAC_PSK", Comment: "This device's key: the EcoWatt client keys its chunk HMAC with strlen(HMAC_PSK) bytes of it.", String: d.PSK},
			{Name: "OTA_SERVER_URL", Comment: "Update server.", String: *deviceURL},
		})
		if err := keys.WriteFile(*headerPath, header, keys.PrivateMode, *force); err != nil {
			return withHint(err, "the device was registered but its key could not be saved; register it again under another id")
		}
		fmt.Fprintf(e.stdout, "wrote %s\n", *headerPath)
	}
	if ecowatt != nil {
		psk, err := protocol.ParsePSK(d.PSK)
		if err != nil {
			return fmt.Errorf("add device %s: the server answered a malformed key: %w", d.ID, err)
		}
		paths, err := ecowatt.write(psk)
		for _, p := range paths {
			fmt.Fprintf(e.stdout, "wrote %s\n", p)
		}
		if err != nil && *credPath != "" {
			return withHint(err, fmt.Sprintf("the device was registered and its key saved in %s; once the problem is fixed: "+
				"fota keys export-ecowatt --credentials %s --keys %s %s", *credPath, *credPath, *keyDir, *ecowattDir))
		}
		if err != nil {
			return withHint(err, "the device was registered but its key could not be saved; register it again under another id")
		}
		fmt.Fprintf(e.stdout, "set DEVICE_ID %q and FLASK_SERVER_URL %q in %s\n", d.ID, *deviceURL,
			filepath.Join(*ecowattDir, "include", "application", "credentials.h"))
	}
	fmt.Fprintf(e.stdout, "added device %s (%s, running %s, API %s)\n", d.ID, d.Hardware, d.Version, d.API)
	return nil
}

func runDeviceList(e *env, args []string) error {
	fs := newFlags("device list")
	server, token := serverFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(e, fs, deviceUsage, args); err != nil {
		return err
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	ds, err := a.Devices(e.ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e, ds)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHARDWARE\tVERSION\tCOUNTER\tAPI\tPINNED\tLAST SEEN\tLABELS")
	for _, d := range ds {
		seen := "never"
		if !d.LastSeen.IsZero() {
			seen = d.LastSeen.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", d.ID, d.Hardware, d.Version, d.SecurityCounter, d.API, orDash(d.PinnedVersion), seen,
			orDash(fota.FormatLabels(d.Labels)))
	}
	return tw.Flush()
}

func bytesOrDash(n int64) string {
	if n <= 0 {
		return "-"
	}
	return fmt.Sprintf("%d bytes", n)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func runDeviceShow(e *env, args []string) error {
	fs := newFlags("device show")
	server, token := serverFlags(fs)
	id := fs.String("id", "", "device id")
	if err := parseNoArgs(e, fs, deviceUsage, args); err != nil {
		return err
	}
	if *id == "" {
		return usagef("--id is required")
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	d, err := a.Device(e.ctx, *id)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "device %s: %s, running %s, security counter %d, API %s, pinned %s\n", d.Device.ID, d.Device.Hardware,
		d.Device.Version, d.Device.SecurityCounter, d.Device.API, orDash(d.Device.PinnedVersion))
	if len(d.Device.Labels) > 0 {
		fmt.Fprintf(e.stdout, "labels: %s\n", fota.FormatLabels(d.Device.Labels))
	}
	if ro := d.Rollout; ro != nil {
		fmt.Fprintf(e.stdout, "rollout %d (%s, %s, wave %d open): this device is in wave %d, %s", ro.ID, shown(ro.Release), ro.RolloutState,
			ro.OpenWave, ro.Wave, ro.State)
		if ro.Reason != "" {
			fmt.Fprintf(e.stdout, " (%s)", shown(ro.Reason))
		}
		fmt.Fprintln(e.stdout)
	}
	if inv := d.Device.Inventory; inv != nil {
		// A device leaves out what it does not know: shown as "-", not 0.
		fmt.Fprintf(e.stdout, "reports: chip %s, slot %s, free flash %s, agent %s (as of %s)\n", orDash(shown(inv.Chip)), bytesOrDash(inv.SlotSize),
			bytesOrDash(inv.FreeFlash), orDash(shown(inv.AgentVersion)), inv.Updated.Local().Format(time.DateTime))
	}
	if !d.Device.Removed.IsZero() {
		// A tombstone: its history is all there is to show.
		fmt.Fprintf(e.stdout, "removed %s: its key no longer works\n", d.Device.Removed.Local().Format(time.DateTime))
		printEvents(e, d.History)
		return nil
	}
	bs, err := a.Backoffs(e.ctx, *id)
	if err != nil {
		return err
	}
	for _, b := range bs {
		if b.Active {
			fmt.Fprintf(e.stdout, "release %s held back on the EcoWatt API until %s after %d reported failure(s) (fota device backoff --id %s --clear)\n",
				b.Version, b.Until.Local().Format(time.DateTime), b.Failures, *id)
		}
	}
	printEvents(e, d.History)
	return nil
}

func runDeviceSet(e *env, args []string) error {
	fs := newFlags("device set")
	server, token := serverFlags(fs)
	id := fs.String("id", "", "device id")
	api := fs.String("api", "", "API policy: native, ecowatt or both")
	if err := parseNoArgs(e, fs, deviceUsage, args); err != nil {
		return err
	}
	if *id == "" || *api == "" {
		return &usageError{msg: "--id and --api are required", hint: "fota device set --id legacy-1 --api ecowatt"}
	}
	if !fota.ValidAPIPolicy(*api) {
		return usagef("--api %q: want native, ecowatt or both", *api)
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	if err := a.SetAPI(e.ctx, *id, *api); err != nil {
		return fmt.Errorf("set API policy of %s: %w", *id, err)
	}
	fmt.Fprintf(e.stdout, "device %s: API policy %s\n", *id, *api)
	return nil
}

func runDeviceBackoff(e *env, args []string) error {
	fs := newFlags("device backoff")
	server, token := serverFlags(fs)
	id := fs.String("id", "", "device id")
	clear := fs.Bool("clear", false, "offer the held-back releases again at the device's next check")
	if err := parseNoArgs(e, fs, deviceUsage, args); err != nil {
		return err
	}
	if *id == "" {
		return usagef("--id is required")
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	if *clear {
		n, err := a.ClearBackoffs(e.ctx, *id)
		if err != nil {
			return fmt.Errorf("clear backoffs of %s: %w", *id, err)
		}
		fmt.Fprintf(e.stdout, "device %s: %d backoff(s) cleared\n", *id, n)
		return nil
	}
	bs, err := a.Backoffs(e.ctx, *id)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tFAILURES\tHELD BACK UNTIL\tACTIVE")
	for _, b := range bs {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", b.Version, b.Failures, b.Until.Local().Format(time.DateTime), yesNo(b.Active))
	}
	return tw.Flush()
}

func runDeviceRemove(e *env, args []string) error {
	fs := newFlags("device remove")
	server, token := serverFlags(fs)
	id := fs.String("id", "", "device id")
	if err := parseNoArgs(e, fs, deviceUsage, args); err != nil {
		return err
	}
	if *id == "" {
		return &usageError{msg: "--id is required", hint: "fota device remove --id ESP32_EcoWatt_Smart"}
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	ended, err := a.RemoveDevice(e.ctx, *id)
	if err != nil {
		return fmt.Errorf("remove device %s: %w", *id, err)
	}
	fmt.Fprintf(e.stdout, "device %s removed: its key no longer works; %d update session(s) ended; its history stays (fota device show --id %s)\n",
		*id, ended, *id)
	return nil
}

// runReleaseWithdraw withdraws a published release.
// releaseCommand is what release withdraw and delete share: a release
// named by --version and --hardware on the server.
type releaseCommand struct {
	server, token, version, hardware *string
}

func newReleaseCommand(fs *flag.FlagSet) *releaseCommand {
	c := &releaseCommand{}
	c.server, c.token = serverFlags(fs)
	c.version = fs.String("version", "", "release version")
	c.hardware = fs.String("hardware", "esp32", "hardware the release is for")
	return c
}

// client checks --version and returns the admin client.
func (c *releaseCommand) client(hint string) (*client.Admin, error) {
	if *c.version == "" {
		return nil, &usageError{msg: "--version is required", hint: hint}
	}
	return adminClient(*c.server, *c.token)
}

func runReleaseWithdraw(e *env, args []string) error {
	fs := newFlags("release withdraw")
	rc := newReleaseCommand(fs)
	reason := fs.String("reason", "", "why, told to the devices whose downloads end and recorded (at most 200 bytes)")
	if err := parseNoArgs(e, fs, releaseUsage, args); err != nil {
		return err
	}
	a, err := rc.client("fota release withdraw --version 1.0.5 --reason \"drains the battery\"")
	if err != nil {
		return err
	}
	w, err := a.WithdrawRelease(e.ctx, *rc.hardware, *rc.version, *reason)
	if err != nil {
		return fmt.Errorf("withdraw %s for %s: %w", *rc.version, *rc.hardware, err)
	}
	fmt.Fprintf(e.stdout, "release %s for %s withdrawn: offered to no device from now on; %d download(s) in progress ended\n",
		w.Release.Version, w.Release.Hardware, w.SessionsEnded)
	return nil
}

func runReleaseDelete(e *env, args []string) error {
	fs := newFlags("release delete")
	rc := newReleaseCommand(fs)
	if err := parseNoArgs(e, fs, releaseUsage, args); err != nil {
		return err
	}
	a, err := rc.client("fota release delete --version 1.0.5 --hardware esp32")
	if err != nil {
		return err
	}
	version, hardware := *rc.version, *rc.hardware
	if err := a.DeleteRelease(e.ctx, hardware, version); err != nil {
		err = fmt.Errorf("delete %s for %s: %w", version, hardware, err)
		var ae *client.APIError
		if errors.As(err, &ae) && ae.Status == http.StatusConflict && strings.Contains(ae.Message, "rollout") {
			return withHint(err, "fota rollout list shows it; fota rollout abort ID (or withdraw the release, which aborts its rollouts and ends its downloads)")
		}
		if errors.As(err, &ae) && ae.Status == http.StatusConflict {
			return withHint(err, "withdraw it first to end its downloads: fota release withdraw --version "+version+" --hardware "+hardware)
		}
		return err
	}
	fmt.Fprintf(e.stdout, "release %s for %s deleted\n", version, hardware)
	return nil
}

func printEvents(e *env, evs []protocol.Event) {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tEVENT\tDEVICE\tVERSION\tROLLOUT\tBY\tDETAIL")
	for _, ev := range evs {
		rollout := "-"
		if ev.RolloutID != 0 {
			rollout = strconv.FormatInt(ev.RolloutID, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Time.Local().Format(time.DateTime), shown(ev.Kind), shown(orDash(ev.DeviceID)),
			shown(orDash(ev.Version)), rollout, shown(orDash(ev.Actor)), shown(ev.Detail))
	}
	tw.Flush()
}

func runDeviceAssign(e *env, args []string) error {
	fs := newFlags("device assign")
	server, token := serverFlags(fs)
	id := fs.String("id", "", "device id")
	version := fs.String("version", "", "release version to pin the device to")
	unpin := fs.Bool("unpin", false, "remove the pin: the device gets the newest release again")
	if err := parseNoArgs(e, fs, deviceUsage, args); err != nil {
		return err
	}
	if *id == "" || (*version == "") == !*unpin {
		return &usageError{msg: "give --id and exactly one of --version or --unpin", hint: "fota device assign --id dev1 --version 1.0.4"}
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	if err := a.Pin(e.ctx, *id, *version); err != nil {
		return err
	}
	if *unpin {
		fmt.Fprintf(e.stdout, "device %s unpinned: it gets the newest release\n", *id)
	} else {
		fmt.Fprintf(e.stdout, "device %s pinned to %s\n", *id, *version)
	}
	return nil
}

const statusUsage = `Usage:
  fota status [--events N] [--json]

Shows the update sessions in progress with their percent, and recent events.
Takes --server and --token (or FOTA_SERVER and FOTA_TOKEN).
`

func runStatus(e *env, args []string) error {
	fs := newFlags("status")
	server, token := serverFlags(fs)
	n := fs.Int("events", 20, "how many recent events to show")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(e, fs, statusUsage, args); err != nil {
		return err
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	sessions, err := a.Sessions(e.ctx)
	if err != nil {
		return err
	}
	evs, err := a.Events(e.ctx, "", *n)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e, map[string]any{"sessions": sessions.Sessions, "events": evs})
	}
	fmt.Fprintf(e.stdout, "%d update session(s) in progress\n", sessions.ActiveSessions)
	if len(sessions.Sessions) > 0 {
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DEVICE\tVERSION\tAPI\tARTIFACT\tSTATE\tPROGRESS\tCHUNKS\tBYTES\tUPDATED")
		for _, s := range sessions.Sessions {
			artifact := s.Artifact
			if artifact == "" {
				artifact = fota.ArtifactFull
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s %5.1f%%\t%d/%d\t%d\t%s\n", s.DeviceID, s.Version, s.API, artifact, s.State,
				bar(s.Percentage, 20), s.Percentage, s.ChunksReceived, s.TotalChunks, s.BytesServed, s.Updated)
		}
		tw.Flush()
	}
	if sessions.Traffic != nil {
		fmt.Fprintf(e.stdout, "on the wire, all recorded sessions: %s\n", trafficLine(*sessions.Traffic))
	}
	fmt.Fprintln(e.stdout, "\nrecent events")
	printEvents(e, evs)
	return nil
}

// trafficLine says what update sessions put on the wire, and what the
// deltas among them saved against full images.
func trafficLine(t protocol.Traffic) string {
	line := fmt.Sprintf("full images %s in %s; deltas %s in %s", web.FormatBytes(t.FullBytes), count(t.FullSessions, "session"),
		web.FormatBytes(t.DeltaBytes), count(t.DeltaSessions, "session"))
	if t.DeltaFailed > 0 {
		line += fmt.Sprintf(", %d failed (full image next)", t.DeltaFailed)
	}
	if t.DeltaDone > 0 && t.DeltaFullBytes > 0 {
		line += fmt.Sprintf("; the %s served in full took %s where the full images weigh %s: %.1f%% saved",
			count(t.DeltaDone, "delta"), web.FormatBytes(t.DeltaDoneBytes), web.FormatBytes(t.DeltaFullBytes),
			100*(1-float64(t.DeltaDoneBytes)/float64(t.DeltaFullBytes)))
	}
	return line
}

// count is "1 session" or "n sessions".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// bar draws a progress bar of width characters.
func bar(percent float64, width int) string {
	filled := int(percent / 100 * float64(width))
	filled = max(0, min(width, filled))
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]"
}

// shown is text from the server as a terminal may print it: control
// characters (a device's report reason can carry line breaks or escape
// sequences to forge or hide lines) are written as Go escapes.
func shown(s string) string {
	if fota.PlainText(s) {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

func runDeviceLabel(e *env, args []string) error {
	fs := newFlags("device label")
	server, token := serverFlags(fs)
	id := fs.String("id", "", "device id")
	var remove stringList
	fs.Var(&remove, "remove", "remove the label with this key (repeat for several)")
	rest, err := parseFlags(e, fs, deviceUsage, args)
	if err != nil {
		return err
	}
	if *id == "" {
		return &usageError{msg: "--id is required", hint: "fota device label --id dev1 ring=canary site=plant-3"}
	}
	set, err := fota.ParseLabels(rest)
	if err != nil {
		return usagef("%s", fota.ErrorMessage(err))
	}
	if len(set) == 0 && len(remove) == 0 {
		return &usageError{msg: "nothing to change", hint: "fota device label --id dev1 ring=canary [--remove site]"}
	}
	a, err := adminClient(*server, *token)
	if err != nil {
		return err
	}
	d, err := a.SetLabels(e.ctx, *id, set, remove)
	if err != nil {
		return fmt.Errorf("label device %s: %w", *id, err)
	}
	fmt.Fprintf(e.stdout, "device %s: labels %s\n", d.ID, orDash(fota.FormatLabels(d.Labels)))
	return nil
}

// loopbackURL reports whether a URL names this machine's loopback address,
// which only a device simulated on this machine can reach.
func loopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
