package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/bundle"
	"github.com/ecowatt/fota/client"
	"github.com/ecowatt/fota/delta"
	"github.com/ecowatt/fota/internal/firmware"
	"github.com/ecowatt/fota/internal/loadgen"
	"github.com/ecowatt/fota/internal/password"
	"github.com/ecowatt/fota/internal/server"
	"github.com/ecowatt/fota/internal/simulator"
	"github.com/ecowatt/fota/internal/update"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

const demoUsage = `Usage:
  fota demo [--devices 5] [--api mixed|native|ecowatt] [--size 128KiB] [--dir DIR] [--timeout 60s] [--dashboard]

Runs the whole system on this machine: makes keys, builds firmware 1.0.3
(installed on the devices), 1.0.4 (good) and 1.0.5 (fails its self-test),
starts the server on a free loopback port and registers the devices. It
rolls 1.0.4 out in two waves (one canary, then the rest, once the canary
confirmed its new image) with live progress, then rolls 1.0.5 out the same
way: the canary rolls back to 1.0.4, the rollout halts by itself, and no
other device downloads a byte of 1.0.5. It ends with a summary and exits 0
only if every device did what was expected.
With --api mixed, odd devices use the native API and even ones the
EcoWatt-compatible API. Everything is removed afterwards unless --dir is given.
With --dashboard the server keeps running after the demo, with a dashboard
user made for you (its password printed), until Ctrl-C: open the address it
prints to see the fleet, the two rollouts and the events in a browser.
`

// demoWaves are the demo's rollouts' waves: a canary, then the rest.
const demoWaves = "1,all"

// demoDevice is one simulated device as the demo tracks it.
type demoDevice struct {
	id    string
	api   string
	sim   *simulator.Device
	bytes atomic.Int64 // TCP bytes both ways

	mu       sync.Mutex
	state    string
	version  string // the release in progress
	percent  float64
	events   []string
	rollback string
}

func (d *demoDevice) onEvent(ev simulator.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch ev.Kind {
	case "progress":
		d.state, d.version, d.percent = string(ev.Progress.State), ev.Progress.Version, ev.Progress.Percent
	case "rolled-back":
		d.rollback = ev.Detail
		d.events = append(d.events, ev.Kind)
	default:
		d.events = append(d.events, ev.Kind)
	}
}

func (d *demoDevice) status() (state, version string, percent float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state, d.version, d.percent
}

type demoRow struct {
	device, api, from, to, result string
	took                          time.Duration
	bytes                         int64
	ok                            bool
}

func runDemo(e *env, args []string) error {
	fs := newFlags("demo")
	n := fs.Int("devices", 5, "how many simulated devices")
	api := fs.String("api", "mixed", "device API: mixed, native or ecowatt")
	sizeFlag := fs.String("size", "128KiB", "firmware image size")
	dirFlag := fs.String("dir", "", "keep everything in this folder (default: a temporary one, removed afterwards)")
	dashboard := fs.Bool("dashboard", false, "keep the server running afterwards, with a dashboard user, until Ctrl-C")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	rest, err := parseFlags(e, fs, demoUsage, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("fota demo takes no arguments, got %q", rest)
	}
	if *n < 1 || *n > 200 {
		return usagef("--devices %d: want 1 to 200", *n)
	}
	if *api != "mixed" && *api != agent.APINative && *api != agent.APIEcoWatt {
		return usagef("--api %q: want mixed, native or ecowatt", *api)
	}
	size, err := parseSize(*sizeFlag)
	if err != nil || size > 16<<20 {
		return usagef("--size %q: want a size up to 16MiB", *sizeFlag)
	}
	dir := *dirFlag
	if dir == "" {
		if dir, err = os.MkdirTemp("", "fota-demo-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(e.ctx, *timeout)
	defer cancel()
	out := e.stdout
	started := time.Now()

	// Keys and firmware, as a release engineer makes them.
	keyDir := filepath.Join(dir, "keys")
	ki, err := keys.Init(keyDir, keys.AlgRSA, true, nil)
	if err != nil {
		return err
	}
	signer, err := keys.LoadSigningKey(filepath.Join(keyDir, keys.SigningKeyFile))
	if err != nil {
		return err
	}
	fwKey, err := keys.LoadFirmwareKey(filepath.Join(keyDir, keys.FirmwareKeyFile))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "fota demo: keys made (signing key %s); building firmware 1.0.4 (good) and 1.0.5 (fails its self-test), %d bytes each,\n"+
		"           each with a delta patch from the version before it for native-API devices\n", ki.Public.ID(), size)
	// One product line: the versions share most of their bytes, as
	// releases do, so the deltas between them are small.
	images := map[string][]byte{}
	for v, b := range map[string]firmware.Behaviour{"1.0.3": firmware.Healthy, "1.0.4": firmware.Healthy, "1.0.5": firmware.FailSelfTest} {
		if images[v], err = firmware.Sample(firmware.SampleOptions{Version: v, Behaviour: b, Size: size, Lineage: "ecowatt"}); err != nil {
			return err
		}
	}
	bundles := map[string][]byte{}
	for _, v := range []struct{ version, base string }{{"1.0.4", "1.0.3"}, {"1.0.5", "1.0.4"}} {
		var buf bytes.Buffer
		m, err := bundle.Build(&buf, bytes.NewReader(images[v.version]), bundle.BuildOptions{Product: "ecowatt", Hardware: "esp32",
			Version: v.version, Signer: signer, FirmwareKey: fwKey, TempDir: dir})
		if err != nil {
			return err
		}
		patch, err := delta.Create(images[v.base], images[v.version], delta.CreateOptions{Compression: "heatshrink"})
		if err != nil {
			return err
		}
		dm, err := bundle.WriteDelta(&buf, m, patch, bundle.DeltaOptions{BaseVersion: v.base, BaseSize: int64(len(images[v.base])),
			BaseSHA256: sha256.Sum256(images[v.base]), Compression: "heatshrink"}, signer, fwKey)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "fota demo: %s: full image %d bytes encrypted; delta from %s %d bytes (%.1f%%)\n", v.version, m.CiphertextSize,
			v.base, dm.CiphertextSize, 100*float64(dm.CiphertextSize)/float64(m.CiphertextSize))
		bundles[v.version] = buf.Bytes()
	}

	// The server, on a free loopback port.
	store, blobs, err := openData(ctx, filepath.Join(dir, "data"))
	if err != nil {
		return err
	}
	defer store.Close()
	defer blobs.Close()
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	srv, err := server.New(server.Config{Store: store, Blobs: blobs, Trusted: []*keys.PublicKey{signer.Public()},
		Logger: slog.New(slog.NewTextHandler(logFile, nil)), RolloutTick: 100 * time.Millisecond})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	defer srv.Close()
	defer hs.Close()
	url := "http://" + ln.Addr().String()
	token, err := createToken(ctx, store, "demo")
	if err != nil {
		return err
	}
	admin, err := client.NewAdmin(url, token)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "fota demo: server listening on %s (data in %s)\n", url, dir)

	// The devices, each with its own flash, running factory firmware 1.0.3.
	devCtx, stopDevices := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopDevices(); wg.Wait() }()
	// Both releases are published now (which offers them to nobody); the
	// rollouts come later. A rollout's canary wave is fixed by a hash of
	// the release and the device ids, so the demo knows its canaries now:
	// with --api mixed they run the native API, because in a rollout with
	// devices that can authenticate only authenticated outcomes count.
	ids := make([]string, *n)
	for i := range ids {
		ids[i] = fmt.Sprintf("ecowatt-%02d", i+1)
	}
	canary := map[string]bool{}
	for _, v := range []string{"1.0.4", "1.0.5"} {
		rel, err := admin.Publish(ctx, bytes.NewReader(bundles[v]))
		if err != nil {
			return err
		}
		waves, _ := update.ParseWaves(demoWaves)
		for id, w := range update.AssignWaves(rel.ID, ids, update.WaveEnds(waves, len(ids))) {
			canary[id] = canary[id] || w == 1
		}
	}
	devices := make([]*demoDevice, *n)
	others := 0
	for i := range devices {
		id := ids[i]
		a := *api
		if a == "mixed" {
			a = agent.APINative
			if !canary[id] {
				if others%2 == 0 {
					a = agent.APIEcoWatt
				}
				others++
			}
		}
		added, err := admin.AddDevice(ctx, protocol.AddDevice{ID: id, Hardware: "esp32", Version: "1.0.3", API: a})
		if err != nil {
			return err
		}
		psk, _ := protocol.ParsePSK(added.PSK)
		d := &demoDevice{id: id, api: a, state: "idle"}
		d.sim, err = simulator.New(simulator.Config{
			Agent: agent.Config{Server: url, DeviceID: id, PSK: psk, Hardware: "esp32", TrustedKey: signer.Public(), FirmwareKey: fwKey,
				API: a, CheckInterval: 200 * time.Millisecond, HTTPClient: loadgen.CountingClient(&d.bytes),
				Retry: agent.RetryPolicy{Attempts: 5, Base: 50 * time.Millisecond, Max: 500 * time.Millisecond}},
			StateDir: filepath.Join(dir, "devices", id), FactoryVersion: "1.0.3", FactoryImage: images["1.0.3"],
			PollInterval: 50 * time.Millisecond, UploadInterval: 500 * time.Millisecond, OnEvent: d.onEvent,
		})
		if err != nil {
			return err
		}
		devices[i] = d
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.sim.Run(devCtx); err != nil {
				d.onEvent(simulator.Event{Kind: "error: " + err.Error()})
			}
		}()
	}
	for booted := false; !booted && ctx.Err() == nil; time.Sleep(20 * time.Millisecond) {
		booted = true
		for _, d := range devices {
			booted = booted && d.sim.Running() != ""
		}
	}
	fmt.Fprintf(out, "fota demo: %d devices booted 1.0.3 (%s API)\n\n", *n, *api)

	live := newLiveView(out, devices)
	var rows []demoRow
	phases := []struct {
		version, title string
		// done says whether a device ended as expected, given its wave and
		// the rollout as it stands; how the device ended.
		done func(d *demoDevice, wave int, r *protocol.Rollout) (bool, string)
		// over says whether the rollout reached the state expected of it.
		over func(r *protocol.Rollout) bool
	}{
		{"1.0.4", "rolling 1.0.4 out in two waves (the canary, then the rest once it confirms): every device should update",
			func(d *demoDevice, _ int, _ *protocol.Rollout) (bool, string) {
				return d.sim.Running() == "1.0.4" && d.has("confirmed"), "updated, confirmed"
			},
			func(r *protocol.Rollout) bool { return r.State == "completed" }},
		{"1.0.5", "rolling 1.0.5 out the same way: it fails its self-test, so the canary should roll back and the rollout halt",
			func(d *demoDevice, wave int, r *protocol.Rollout) (bool, string) {
				if wave == 1 {
					return d.sim.Running() == "1.0.4" && d.rolledBackFrom("1.0.5"), "canary: rolled back 1.0.5 (" + d.rollbackReason() + ")"
				}
				return r.State == "halted", "not offered 1.0.5: its wave never opened"
			},
			func(r *protocol.Rollout) bool { return r.State == "halted" }},
	}
	waveOf := map[string]map[string]int{}
	for _, ph := range phases {
		fmt.Fprintf(out, "fota demo: %s\n", ph.title)
		before := make([]int64, len(devices))
		from := make([]string, len(devices))
		for i, d := range devices {
			before[i] = d.bytes.Load()
			from[i] = d.sim.Running()
			d.clearEvents()
		}
		t0 := time.Now()
		created, err := admin.CreateRollout(ctx, protocol.CreateRollout{Release: ph.version, Waves: demoWaves, Soak: "1s"})
		if err != nil {
			return err
		}
		r, err := admin.Rollout(ctx, created.ID)
		if err != nil {
			return err
		}
		waves := map[string]int{}
		for _, m := range r.Devices {
			waves[m.ID] = m.Wave
		}
		waveOf[ph.version] = waves
		fmt.Fprintf(out, "fota demo: rollout %d of %s: waves of %s device(s), soak 1s, halting beyond %s failures\n", r.ID, ph.version, waveSizes(r), r.MaxFailures)
		doneAt := make([]time.Duration, len(devices))
		results := make([]string, len(devices))
		for {
			if r, err = admin.Rollout(ctx, created.ID); err != nil {
				return err
			}
			all := ph.over(r)
			for i, d := range devices {
				if doneAt[i] == 0 {
					if ok, how := ph.done(d, waves[d.id], r); ok {
						doneAt[i], results[i] = time.Since(t0), how
					}
				}
				all = all && doneAt[i] != 0
			}
			live.draw(false)
			if all || ctx.Err() != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		live.draw(true)
		fmt.Fprintf(out, "fota demo: rollout %d is %s, wave %d of %d: %d confirmed, %d failed", r.ID, r.State, r.Wave, r.Waves, r.Counts.Confirmed, r.Counts.Failed)
		if r.Reason != "" {
			fmt.Fprintf(out, " (%s)", r.Reason)
		}
		fmt.Fprintln(out)
		if t := r.Traffic; t != nil {
			fmt.Fprintf(out, "fota demo: rollout %d on the wire: %s\n", r.ID, trafficLine(*t))
		}
		for i, d := range devices {
			row := demoRow{device: d.id, api: d.api, from: from[i], to: d.sim.Running(), took: doneAt[i], bytes: d.bytes.Load() - before[i],
				result: results[i], ok: doneAt[i] != 0}
			if !row.ok {
				row.result = "NOT DONE: " + d.lastState()
			}
			rows = append(rows, row)
		}
		fmt.Fprintln(out)
	}
	// The devices outside the canary wave must not have downloaded 1.0.5:
	// give them a few more check-ins to prove the halt holds.
	if ctx.Err() == nil {
		time.Sleep(time.Second)
	}

	// The server's record must agree with the devices. A device counts its
	// rollback done when it boots back, and its report reaches the server a
	// moment later, so give the reports time to land.
	serverOK := false
	var wrong []string
	for deadline := time.Now().Add(15 * time.Second); ; {
		wrong = wrong[:0]
		for _, d := range devices {
			detail, err := admin.Device(ctx, d.id)
			if err != nil {
				return err
			}
			kinds := map[string]bool{}
			for _, ev := range detail.History {
				kinds[ev.Kind+" "+ev.Version] = true
			}
			canary := waveOf["1.0.5"][d.id] == 1
			if detail.Device.Version != "1.0.4" || !kinds["confirmed 1.0.4"] || kinds["rolled-back 1.0.5"] != canary ||
				!canary && kinds["session-opened 1.0.5"] {
				wrong = append(wrong, fmt.Sprintf("fota demo: the server's record of %s is wrong: version %s, events %v", d.id, detail.Device.Version, kinds))
			}
		}
		if len(wrong) == 0 {
			serverOK = true
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, w := range wrong {
		fmt.Fprintln(out, w)
	}

	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tAPI\tFROM\tTO\tRESULT\tTIME\tHTTP BYTES (ALL REQUESTS, BOTH WAYS)")
	failed := 0
	for _, r := range rows {
		took := "-"
		if r.ok {
			took = r.took.Round(10 * time.Millisecond).String()
		} else {
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", r.device, r.api, r.from, r.to, r.result, took, r.bytes)
	}
	tw.Flush()
	fmt.Fprintf(out, "\nfota demo: %d devices, 2 rollouts, %s in all\n", len(devices), time.Since(started).Round(100*time.Millisecond))
	if serverOK && len(devices) > 1 {
		fmt.Fprintf(out, "fota demo: the server opened no 1.0.5 session for the %d device(s) outside the canary wave: not a byte of 1.0.5 reached them\n",
			len(devices)-1)
	}
	switch {
	case ctx.Err() != nil && e.ctx.Err() == nil:
		return withHint(fmt.Errorf("demo did not finish within %s: %d device step(s) not done", *timeout, failed), "see the server log with --dir DIR, or raise --timeout")
	case e.ctx.Err() != nil:
		return errors.New("demo interrupted")
	case failed > 0 || !serverOK:
		return fmt.Errorf("demo failed: %d device step(s) did not end as expected", failed)
	}
	fmt.Fprintln(out, "fota demo: every device did what was expected")
	if *dashboard {
		return demoDashboard(e, store, url)
	}
	return nil
}

// demoDashboard makes a dashboard user with a random password and keeps
// the demo's server running until Ctrl-C.
func demoDashboard(e *env, store fota.Store, url string) error {
	pw, err := randomPassword()
	if err != nil {
		return err
	}
	hash, err := password.Hash(pw)
	if err != nil {
		return err
	}
	if err := store.CreateUser(fota.WithActor(e.ctx, "local"), &fota.User{Name: "demo", Role: fota.RoleAdmin, PasswordHash: hash}); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "\nfota demo: the dashboard is at %s/ : sign in as demo, password %s (this demo's only; Ctrl-C ends it)\n", url, pw)
	<-e.ctx.Done()
	return nil
}

// randomPassword is 16 random letters and digits, for a demo's throwaway
// user.
func randomPassword() (string, error) {
	const alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random password: %w", err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b), nil
}

func (d *demoDevice) has(kind string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, k := range d.events {
		if k == kind {
			return true
		}
	}
	return false
}

func (d *demoDevice) rolledBackFrom(v string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.HasPrefix(d.rollback, v+":")
}

func (d *demoDevice) rollbackReason() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, reason, _ := strings.Cut(d.rollback, ": ")
	return reason
}

func (d *demoDevice) lastState() string {
	s, v, p := d.status()
	return fmt.Sprintf("%s %s %.0f%%", s, v, p)
}

func (d *demoDevice) clearEvents() {
	d.mu.Lock()
	d.events, d.rollback = nil, ""
	d.mu.Unlock()
}

// liveView draws one progress line per device: redrawn in place on a
// terminal, printed only on change otherwise.
type liveView struct {
	w       io.Writer
	devices []*demoDevice
	tty     bool
	drawn   int
	last    []string
}

func newLiveView(w io.Writer, devices []*demoDevice) *liveView {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &liveView{w: w, devices: devices, tty: tty, last: make([]string, len(devices))}
}

func (l *liveView) line(d *demoDevice) string {
	state, version, pct := d.status()
	running := d.sim.Running()
	switch state {
	case string(agent.StateDownloading), string(agent.StateVerifying), string(agent.StateApplying), string(agent.StateCompleted):
		return fmt.Sprintf("  %-11s %-8s running %-6s %-11s %-6s %s %3.0f%%", d.id, d.api, running, state, version, bar(pct, 24), pct)
	case string(agent.StateRollback):
		return fmt.Sprintf("  %-11s %-8s running %-6s rolled back %s", d.id, d.api, running, version)
	}
	return fmt.Sprintf("  %-11s %-8s running %-6s %s", d.id, d.api, running, state)
}

func (l *liveView) draw(final bool) {
	if l.tty {
		if l.drawn > 0 {
			fmt.Fprintf(l.w, "\033[%dA", l.drawn)
		}
		for _, d := range l.devices {
			fmt.Fprintf(l.w, "\033[2K%s\n", l.line(d))
		}
		l.drawn = len(l.devices)
		if final {
			l.drawn = 0
		}
		return
	}
	// Not a terminal: print a device's line when its state changes, and
	// download progress in quarters, so logs stay short.
	for i, d := range l.devices {
		state, version, pct := d.status()
		key := state + version
		if state == string(agent.StateDownloading) {
			key += fmt.Sprint(int(pct) / 25)
		}
		if key != l.last[i] {
			l.last[i] = key
			fmt.Fprintln(l.w, l.line(d))
		}
	}
}
