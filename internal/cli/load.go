package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/loadgen"
	"github.com/ecowatt/fota/internal/mqtt"
	"github.com/ecowatt/fota/keys"
)

const loadUsage = `Usage:
  fota load --server URL --token T --keys DIR --devices 1000 [--api native|ecowatt]
            [--release-size 1MiB] [--rate 200/s] [--duration 60s] [--chunks-per-request 16] [--chunk-delay 300ms] [--no-keepalive] [--check-only] [--verify full|hmac] [--keep] [--json] [--cpuprofile FILE]
  fota load --server URL --token T --keys DIR --devices 10000 --mqtt mqtt://127.0.0.1:1883 [--mqtt-ca ca.pem] [--connect-rate 2000/s] [--wait 2m]

Runs a simulated fleet against a server to size a deployment. It publishes a
release for a hardware name of its own (the real fleet is never offered it),
registers the devices, and runs them through complete updates with the real
agent: HMAC checks, decryption, SHA-256 and signature checks, no flash
writes (--verify hmac: the devices check the manifest signature and every
chunk's HMAC but do not decrypt, so that one load machine can keep up with
a server feeding many devices). It prints updates completed and failed, chunks/s, MiB/s of firmware,
check and chunk latency p50/p99/max, bytes on the wire and TCP connections
per update, and errors by kind. --keys must hold the release key the server
trusts (signing.key, firmware.key). Ctrl-C stops early and reports.

Its data has one name: the release is for hardware load-RUN and the devices
are load-RUN-00000 on. At the end (after Ctrl-C too) it removes the devices
and deletes the release through the admin API, so a production server keeps
only their history, which retention prunes; --keep leaves them.

With --mqtt it measures push instead: every device connects to the broker
(its id, the password derived from its key) and subscribes to its topic,
--connect-rate a second; then the release is published with a rollout to
all of them, and each device, woken by its notification, checks in over the
native API (at a random moment within the notification's spread, as the
agent does), on a connection of its own, and downloads nothing. It prints
how many subscribed, were notified and checked in, and the time from the
publish to the first, median, 90th and 99th percentile and last check-in.
Run the server with --max-conns-per-client 0: the load comes from few
addresses. Against the server's own broker (--mqtt-listen) the devices log
in at once; an external broker must first be told of them (fota mqtt acl
after they are registered, and a reload), so --mqtt is meant for the
server's broker.

Examples:
  fota load --server http://127.0.0.1:8080 --token $FOTA_TOKEN --keys keys --devices 200 --api ecowatt --release-size 256KiB
  fota load --server http://127.0.0.1:8080 --token $FOTA_TOKEN --keys keys --devices 10000 --mqtt mqtt://127.0.0.1:1883
`

func runLoad(e *env, args []string) error {
	fs := newFlags("load")
	server, token := serverFlags(fs)
	keyDir := fs.String("keys", "", "key folder with signing.key and firmware.key")
	devices := fs.Int("devices", 100, "simulated devices")
	api := fs.String("api", agent.APINative, "native or ecowatt")
	sizeFlag := fs.String("release-size", "1MiB", "firmware size of the test release")
	rateFlag := fs.String("rate", "", "device starts per second, e.g. 200/s (default: all at once)")
	duration := fs.Duration("duration", 0, "stop after this long (default: when every device is done)")
	perRequest := fs.Int("chunks-per-request", 0, "chunks per native request (default: the agent's)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	chunkDelay := fs.Duration("chunk-delay", 0, "wait this long before each chunk request: slow devices holding sessions open")
	noKeepAlive := fs.Bool("no-keepalive", false, "a new TCP connection for every request, as the original EcoWatt ESP32 client does")
	checkOnly := fs.Bool("check-only", false, "devices already run the release: one check-in each, to measure check-in capacity")
	verify := fs.String("verify", loadgen.VerifyFull, "what devices check: full (the real agent) or hmac (signature and chunk HMACs, no decryption: measures the server, not this machine's CPU; native API)")
	cpuProfile := fs.String("cpuprofile", "", "write the load generator's CPU profile to this file (go tool pprof FILE)")
	keep := fs.Bool("keep", false, "leave the run's devices and release on the server (by default they are removed at the end)")
	mqttURL := fs.String("mqtt", "", "measure push: devices subscribe at this broker (mqtt://host:1883, mqtts://host:8883) and check in when notified")
	mqttCA := fs.String("mqtt-ca", "", "with --mqtt mqtts://: CA certificates (PEM) to trust")
	connectRate := fs.String("connect-rate", "2000/s", "with --mqtt: MQTT connections opened per second")
	wait := fs.Duration("wait", 2*time.Minute, "with --mqtt: how long to wait for every device to check in")
	if err := parseNoArgs(e, fs, loadUsage, args); err != nil {
		return err
	}
	if *keyDir == "" {
		return &usageError{msg: "--keys is required", hint: "the folder from 'fota keys init' whose signing.pub the server trusts"}
	}
	if *api != agent.APINative && *api != agent.APIEcoWatt {
		return usagef("--api %q: want native or ecowatt", *api)
	}
	if *verify != loadgen.VerifyFull && *verify != loadgen.VerifyHMAC {
		return usagef("--verify %q: want full or hmac", *verify)
	}
	if *verify == loadgen.VerifyHMAC && (*api != agent.APINative || *checkOnly) {
		return &usageError{msg: "--verify hmac needs --api native and a download", hint: "the EcoWatt API and --check-only always run the real agent"}
	}
	size, err := parseSize(*sizeFlag)
	if err != nil || size <= 0 {
		return usagef("--release-size %q is not a size", *sizeFlag)
	}
	var rate float64
	if *rateFlag != "" {
		if rate, err = strconv.ParseFloat(strings.TrimSuffix(*rateFlag, "/s"), 64); err != nil || rate <= 0 {
			return usagef("--rate %q: want a number per second, e.g. 200/s", *rateFlag)
		}
	}
	if *server == "" || *token == "" {
		return &usageError{msg: "--server and --token are required", hint: "or set FOTA_SERVER and FOTA_TOKEN"}
	}
	signer, err := loadPrivate(e, filepath.Join(*keyDir, keys.SigningKeyFile), keys.LoadSigningKey)
	if err != nil {
		return err
	}
	fwKey, err := loadPrivate(e, filepath.Join(*keyDir, keys.FirmwareKeyFile), keys.LoadFirmwareKey)
	if err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile %s: %w", *cpuProfile, err)
		}
		defer pprof.StopCPUProfile()
	}
	if *mqttURL != "" {
		if *api != agent.APINative || *checkOnly {
			return usagef("--mqtt measures push to native devices: leave out --api ecowatt and --check-only")
		}
		return runPushLoad(e, loadgen.PushConfig{Config: loadgen.Config{Server: *server, Token: *token, Devices: *devices, API: agent.APINative,
			ReleaseSize: size, Signer: signer, FirmwareKey: fwKey, Keep: *keep}, MQTT: *mqttURL, Wait: *wait}, *mqttCA, *connectRate, *asJSON)
	}
	fmt.Fprintf(e.stderr, "fota load: %d devices, %s API, %d-byte release, against %s\n", *devices, *api, size, *server)
	rep, err := loadgen.Run(e.ctx, loadgen.Config{Server: *server, Token: *token, Devices: *devices, API: *api, ReleaseSize: size,
		Rate: rate, Duration: *duration, Signer: signer, FirmwareKey: fwKey, ChunksPerRequest: *perRequest, CheckOnly: *checkOnly, ChunkDelay: *chunkDelay, NoKeepAlive: *noKeepAlive, Verify: *verify, Keep: *keep,
		OnProgress: func(s loadgen.Snapshot) {
			fmt.Fprintf(e.stderr, "  %5.0fs  started %d  done %d  failed %d  chunks %d\n", s.Elapsed.Seconds(), s.Started, s.Done, s.Fails, s.Chunks)
		}})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e, rep)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	lat := func(l loadgen.Latency) string {
		return fmt.Sprintf("p50 %.2f ms  p99 %.2f ms  max %.2f ms  (%d requests)", l.P50ms, l.P99ms, l.MaxMs, l.Count)
	}
	data := "removed (devices removed, release deleted)"
	if rep.Kept {
		data = "kept on the server"
	}
	row("run", fmt.Sprintf("%s: devices load-%s-*, release for hardware load-%s; %s", rep.Run, rep.Run, rep.Run, data))
	row("api", rep.API)
	row("devices", strconv.Itoa(rep.Devices))
	if *checkOnly {
		row("check-ins completed", strconv.Itoa(rep.Completed))
		row("check-ins failed", strconv.Itoa(rep.Failed))
		row("time", rep.Elapsed.Round(10*time.Millisecond).String())
		row("check-ins/s", fmt.Sprintf("%.0f", float64(rep.Completed)/rep.Seconds))
		row("check latency", lat(rep.Check))
	} else {
		row("updates completed", strconv.Itoa(rep.Completed))
		row("updates failed", strconv.Itoa(rep.Failed))
		row("time", rep.Elapsed.Round(10*time.Millisecond).String())
		row("chunks/s", fmt.Sprintf("%.0f", rep.ChunksPerSecond))
		row("firmware MiB/s", fmt.Sprintf("%.2f", rep.MiBPerSecond))
		row("check latency", lat(rep.Check))
		row("chunk latency", lat(rep.Chunk))
		row("bytes on the wire per update", fmt.Sprintf("%.0f (%.2fx the ciphertext)", rep.WireBytesPerUpdate, rep.WireBytesPerUpdate/float64(rep.CiphertextBytes)))
		row("TCP connections per update", fmt.Sprintf("%.2f", rep.ConnsPerUpdate))
	}
	for k, n := range rep.Errors {
		row("error: "+k, strconv.Itoa(n))
	}
	tw.Flush()
	if rep.Failed > 0 {
		return fmt.Errorf("%d of %d updates failed", rep.Failed, rep.Devices)
	}
	return nil
}

func runPushLoad(e *env, cfg loadgen.PushConfig, caFile, connectRate string, asJSON bool) error {
	rate, err := strconv.ParseFloat(strings.TrimSuffix(connectRate, "/s"), 64)
	if err != nil || rate <= 0 {
		return usagef("--connect-rate %q: want a number per second, e.g. 2000/s", connectRate)
	}
	cfg.ConnectRate = rate
	if caFile != "" {
		pool, err := mqtt.LoadCAFile(caFile)
		if err != nil {
			return err
		}
		cfg.RootCAs = pool
	}
	fmt.Fprintf(e.stderr, "fota load: %d devices subscribing at %s, then a rollout to all of them on %s\n", cfg.Devices, cfg.MQTT, cfg.Server)
	start := time.Now()
	cfg.OnPhase = func(phase string) {
		fmt.Fprintf(e.stderr, "  %5.1fs  %s\n", time.Since(start).Seconds(), phase)
	}
	rep, err := loadgen.RunPush(e.ctx, cfg)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(e, rep)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("run", rep.Run)
	row("devices", strconv.Itoa(rep.Devices))
	row("subscribed", fmt.Sprintf("%d (in %.1f s)", rep.Subscribed, rep.ConnectS))
	row("notified", fmt.Sprintf("%d (spread %d ms)", rep.Notified, rep.SpreadMS))
	row("checked in", fmt.Sprintf("%d (%d offered the update), %d within 5 s", rep.CheckedIn, rep.Offered, rep.Within5s))
	all := "not every device"
	if rep.AllS > 0 {
		all = fmt.Sprintf("%.2f s", rep.AllS)
	}
	row("publish to check-in", fmt.Sprintf("first %.2f s  p50 %.2f s  p90 %.2f s  p99 %.2f s  all %s", rep.FirstS, rep.P50S, rep.P90S, rep.P99S, all))
	row("check latency", fmt.Sprintf("p50 %.2f ms  p99 %.2f ms  max %.2f ms", rep.Check.P50ms, rep.Check.P99ms, rep.Check.MaxMs))
	row("the timer instead", "a 6-hour timer wakes a device 3 hours after a change on average")
	for k, n := range rep.Errors {
		row("error: "+k, strconv.Itoa(n))
	}
	tw.Flush()
	if rep.CheckedIn < rep.Devices {
		return fmt.Errorf("%d of %d devices did not check in within --wait %s", rep.Devices-rep.CheckedIn, rep.Devices, cfg.Wait)
	}
	return nil
}
