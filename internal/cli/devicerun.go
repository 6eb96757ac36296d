package cli

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/mqtt"
	"github.com/ecowatt/fota/internal/simulator"
	"github.com/ecowatt/fota/keys"
	"github.com/ecowatt/fota/protocol"
)

const deviceRunUsage = `Usage:
  fota device run --credentials dev.json --keys-h dev_keys.h --state ./dev1 --version 1.0.3 [--image app-1.0.3.bin]
                  [--no-delta] [--check-interval 6h] [--poll-interval 5s] [--upload-interval 30s]
                  [--api native|ecowatt] [--slot-size 4MiB] [--server URL]
                  [--mqtt mqtt://host:1883 [--mqtt-ca ca.pem] [--mqtt-min-interval 1m]]

Runs a simulated EcoWatt device: its flash, counters and logs live in
--state, so killing and restarting the process is a power cut. --version
names the factory image written to slot 0 when --state is empty (--image is
that image, e.g. from 'fota firmware sample'; default: a small sample of
--version); after that the device runs whatever its boot step picks. On the
native API the device asks for delta patches onto the image it runs and
applies them as they download (--no-delta: full images only). It polls a simulated inverter,
uploads readings in batches to --state/uploads.jsonl, and checks for updates
on its timer, pausing its work while one downloads and installs. An update
the server offers with an install window (a rollout's maintenance window) is
downloaded and verified at once, and installed at a check when the window is
open: the device checks again when it opens.

With --mqtt the device also listens for push notifications on its topic
(fota/v1/devices/<id>/notify) at that broker (mqtt://host:1883 or
mqtts://host:8883) and checks in as soon as one comes, at most once per
--mqtt-min-interval. Nothing to configure for the broker's login: the user
name is the device id and the password is derived from the device key.
The timer stays the fallback: a broker that is down or unreachable only
delays updates until the next timed check, and the device reconnects by
itself. --mqtt-ca verifies an mqtts broker (default: the system's roots).

Examples:
  fota device run --credentials dev.json --keys-h dev_keys.h --state ./dev1 --version 1.0.3 --check-interval 30s
  fota device run --credentials dev.json --keys-h dev_keys.h --state ./dev1 --mqtt mqtt://127.0.0.1:1883
`

func loadCredentials(path string) (*Credentials, protocol.PSK, error) {
	var c Credentials
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, protocol.PSK{}, fmt.Errorf("read credentials: %w", err)
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, protocol.PSK{}, fmt.Errorf("credentials %s: not valid JSON: %w", path, err)
	}
	psk, err := protocol.ParsePSK(c.PSK)
	if err != nil {
		return nil, psk, fmt.Errorf("credentials %s: %w", path, err)
	}
	if !protocol.ValidDeviceID(c.DeviceID) {
		return nil, psk, fmt.Errorf("credentials %s: device_id %q is not valid", path, c.DeviceID)
	}
	return &c, psk, nil
}

func runDeviceRun(e *env, args []string) error {
	fs := newFlags("device run")
	credPath := fs.String("credentials", "", "credentials file from 'fota device add'")
	headerPath := fs.String("keys-h", "", "the device's keys.h (SERVER_PUBLIC_KEY, AES_FIRMWARE_KEY)")
	state := fs.String("state", "", "folder for the device's flash, counters and logs")
	version := fs.String("version", "", "factory firmware version, used when --state is empty")
	server := fs.String("server", "", "server URL (default: the one in the credentials)")
	api := fs.String("api", agent.APINative, "device API: native or ecowatt")
	checkEvery := fs.Duration("check-interval", 6*time.Hour, "how often to check for updates")
	pollEvery := fs.Duration("poll-interval", 5*time.Second, "how often to poll the inverter")
	uploadEvery := fs.Duration("upload-interval", 30*time.Second, "how often to upload readings")
	slotSize := fs.String("slot-size", "4MiB", "size of each OTA slot")
	mqttURL := fs.String("mqtt", "", "MQTT broker for push notifications (mqtt://host:1883, mqtts://host:8883)")
	mqttCA := fs.String("mqtt-ca", "", "PEM file of the CA certificates that verify an mqtts broker (default: the system's)")
	mqttMin := fs.Duration("mqtt-min-interval", agent.DefaultNotifyMinInterval, "least time between two checks push notifications cause")
	imagePath := fs.String("image", "", "factory image file written to slot 0 when --state is empty (default: a small sample of --version)")
	noDelta := fs.Bool("no-delta", false, "take full images only; by default the device asks for delta patches onto the image it runs")
	rest, err := parseFlags(e, fs, deviceRunUsage, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("fota device run takes no arguments, got %q", rest)
	}
	if *mqttURL != "" {
		if err := agent.ValidateMQTT(*mqttURL); err != nil {
			return &usageError{msg: "--mqtt: " + err.Error(), hint: "--mqtt mqtt://127.0.0.1:1883, or mqtts://broker.example:8883 for TLS"}
		}
	} else if *mqttCA != "" {
		return usagef("--mqtt-ca needs --mqtt")
	}
	if *mqttMin <= 0 {
		return usagef("--mqtt-min-interval %s: want a positive duration", *mqttMin)
	}
	var mqttRoots *x509.CertPool
	if *mqttCA != "" {
		if mqttRoots, err = mqtt.LoadCAFile(*mqttCA); err != nil {
			return fmt.Errorf("--mqtt-ca: %w", err)
		}
	}
	if *credPath == "" || *headerPath == "" || *state == "" {
		return &usageError{msg: "--credentials, --keys-h and --state are required", hint: "fota device run --credentials dev.json --keys-h dev_keys.h --state ./dev1 --version 1.0.3"}
	}
	if *api != agent.APINative && *api != agent.APIEcoWatt {
		return usagef("--api %q: want native or ecowatt", *api)
	}
	size, err := parseSize(*slotSize)
	if err != nil || size <= 0 {
		return usagef("--slot-size %q is not a size", *slotSize)
	}
	cred, psk, err := loadCredentials(*credPath)
	if err != nil {
		return err
	}
	var factory []byte
	if *imagePath != "" {
		if *version == "" {
			return usagef("--image needs --version: the version of that image")
		}
		if factory, err = os.ReadFile(*imagePath); err != nil {
			return fmt.Errorf("--image: %w", err)
		}
		if int64(len(factory)) > int64(size) {
			return usagef("--image %s is %d bytes, larger than --slot-size %s", *imagePath, len(factory), *slotSize)
		}
	}
	headerData, err := os.ReadFile(*headerPath)
	if err != nil {
		return fmt.Errorf("read keys.h: %w", err)
	}
	dk, err := keys.ParseDeviceHeader(headerData)
	if err != nil {
		return err
	}
	if dk.DeviceID != "" && dk.DeviceID != cred.DeviceID {
		return fmt.Errorf("%s is for device %s but %s is for %s", *headerPath, dk.DeviceID, *credPath, cred.DeviceID)
	}
	if *server == "" {
		*server = cred.Server
	}
	if *server == "" {
		return &usageError{msg: "no server URL in the credentials", hint: "pass --server http://127.0.0.1:8080"}
	}
	if err := os.MkdirAll(*state, 0o700); err != nil {
		return fmt.Errorf("state folder: %w", err)
	}
	logFile, err := os.OpenFile(filepath.Join(*state, "device.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("device log: %w", err)
	}
	defer logFile.Close()
	hardware := cred.Hardware
	if hardware == "" {
		hardware = "esp32"
	}
	printer := newEventPrinter(e.stdout, cred.DeviceID)
	logger := slog.New(slog.NewTextHandler(logFile, nil))
	dev, err := simulator.New(simulator.Config{
		Agent: agent.Config{Server: *server, DeviceID: cred.DeviceID, PSK: psk, Hardware: hardware, TrustedKey: dk.PublicKey,
			FirmwareKey: dk.FirmwareKey, API: *api, CheckInterval: *checkEvery, Logger: logger,
			MQTT: *mqttURL, MQTTRootCAs: mqttRoots, NotifyMinInterval: *mqttMin, NoDelta: *noDelta},
		StateDir: *state, FactoryVersion: *version, FactoryImage: factory, SlotSize: int64(size), PollInterval: *pollEvery, UploadInterval: *uploadEvery,
		Logger:  logger,
		OnEvent: printer.print,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: checking %s every %s over the %s API; state in %s\n", cred.DeviceID, *server, *checkEvery, *api, *state)
	if *mqttURL != "" {
		fmt.Fprintf(e.stdout, "%s: listening for push notifications at %s\n", cred.DeviceID, *mqttURL)
		go printPushState(e.ctx, printer, dev)
	}
	if err := dev.Run(e.ctx); err != nil {
		return fmt.Errorf("device %s: %w", cred.DeviceID, err)
	}
	fmt.Fprintf(e.stdout, "%s: powered off, running %s\n", cred.DeviceID, dev.Running())
	return nil
}

// printPushState says when the device's push connection comes and goes,
// so whoever runs it sees whether notifications can reach it.
func printPushState(ctx context.Context, p *eventPrinter, dev *simulator.Device) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	connected, said := false, ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a := dev.Agent()
		if a == nil {
			continue
		}
		var line string
		switch now := a.PushConnected(); {
		case now && !connected:
			line = "push: subscribed to " + protocol.NotifyTopic(p.id)
		case !now && connected:
			line = "push: disconnected; checking on the timer until it is back"
		case !now && a.PushError() != "" && a.PushError() != said:
			// Each new reason once, not every retry.
			said = a.PushError()
			line = "push: cannot connect (" + said + "); retrying, checking on the timer meanwhile" + pushHint(said)
		}
		connected = a.PushConnected()
		if connected {
			said = ""
		}
		if line == "" {
			continue
		}
		p.mu.Lock()
		fmt.Fprintf(p.w, "%s: %s\n", p.id, line)
		p.mu.Unlock()
	}
}

// pushHint says what a push connection error usually means.
func pushHint(err string) string {
	switch {
	case strings.Contains(err, "EOF") || strings.Contains(err, "connection reset"):
		return " (a TLS broker? use mqtts://)"
	case strings.Contains(err, "not Authorized") || strings.Contains(err, "not authorized") || strings.Contains(err, "bad user name or password"):
		return " (the broker does not know this device: for mosquitto, run fota mqtt acl again and reload it)"
	case strings.Contains(err, "certificate"):
		return " (give the broker's CA with --mqtt-ca)"
	case strings.Contains(err, "connection refused"):
		return " (nothing listens there: check the address)"
	}
	return ""
}

// eventPrinter prints device events as lines, progress every 10%.
type eventPrinter struct {
	w       io.Writer
	id      string
	mu      sync.Mutex
	lastPct int
	last    agent.State
}

func newEventPrinter(w io.Writer, id string) *eventPrinter {
	return &eventPrinter{w: w, id: id, lastPct: -1}
}

func (p *eventPrinter) print(ev simulator.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev.Kind {
	case "progress":
		pr := ev.Progress
		pct := int(pr.Percent) / 10 * 10
		if pr.State == p.last && (pr.State != agent.StateDownloading || pct == p.lastPct) {
			return
		}
		p.last, p.lastPct = pr.State, pct
		switch pr.State {
		case agent.StateDownloading:
			what := ""
			if pr.Delta {
				what = fmt.Sprintf(", a delta patch of %d bytes", pr.TotalBytes)
				if pr.FullBytes > 0 {
					what += fmt.Sprintf(" instead of the %d-byte image", pr.FullBytes)
				}
			}
			fmt.Fprintf(p.w, "%s: downloading %s %s %3.0f%% (%d/%d chunks%s)\n", p.id, pr.Version, bar(pr.Percent, 20), pr.Percent, pr.Chunk, pr.Chunks, what)
		case agent.StateError:
			if agent.IsDeltaFailure(pr.Err) {
				fmt.Fprintf(p.w, "%s: %v; asking for the full image\n", p.id, pr.Err)
				break
			}
			fmt.Fprintf(p.w, "%s: update failed: %v\n", p.id, pr.Err)
		case agent.StateDeferred:
			why := "install deferred (maintenance window)"
			if d := pr.Deferred; d != nil && !d.Until.IsZero() {
				why = "install deferred until " + d.Until.Local().Format(time.DateTime) + " (maintenance window)"
			} else if d != nil {
				why = "install deferred: its maintenance window closed at " + d.Closed.Local().Format(time.DateTime) + "; checking again later"
			}
			fmt.Fprintf(p.w, "%s: %s download complete; %s\n", p.id, pr.Version, why)
		case agent.StateIdle, agent.StateChecking:
			// quiet: these happen at every check
		default:
			fmt.Fprintf(p.w, "%s: %s %s\n", p.id, pr.State, pr.Version)
		}
	default:
		fmt.Fprintf(p.w, "%s: %s (running %s) %s\n", p.id, ev.Kind, ev.Version, ev.Detail)
	}
}
