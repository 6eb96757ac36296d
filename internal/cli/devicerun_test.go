package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/simulator"
)

// `fota device run` says when a verified update waits for its maintenance
// window, and until when.
func TestDeviceRunPrintsDeferredInstall(t *testing.T) {
	at := time.Date(2026, 5, 2, 2, 0, 0, 0, time.UTC)
	for _, row := range []struct {
		name     string
		deferred *agent.DeferredError
		want     string
	}{
		{"window opens later", &agent.DeferredError{Version: "1.0.4", Until: at},
			"dev1: 1.0.4 download complete; install deferred until " + at.Local().Format(time.DateTime) + " (maintenance window)\n"},
		{"window closed", &agent.DeferredError{Version: "1.0.4", Closed: at},
			"dev1: 1.0.4 download complete; install deferred: its maintenance window closed at " + at.Local().Format(time.DateTime) + "; checking again later\n"},
	} {
		t.Run(row.name, func(t *testing.T) {
			var out bytes.Buffer
			p := newEventPrinter(&out, "dev1")
			p.print(simulator.Event{Kind: "progress", Progress: &agent.Progress{State: agent.StateVerifying, Version: "1.0.4"}})
			out.Reset()
			p.print(simulator.Event{Kind: "progress", Progress: &agent.Progress{State: agent.StateDeferred, Version: "1.0.4", Deferred: row.deferred}})
			if out.String() != row.want {
				t.Fatalf("printed %q\nwant    %q", out.String(), row.want)
			}
		})
	}
}

// Bad push flags are refused before anything starts, saying what is wrong.
func TestDeviceRunMQTTFlags(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, row := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"--mqtt", "://bad"}, 2, `fota: error: --mqtt: MQTT broker URL "://bad": missing protocol scheme` + "\nfota: hint: --mqtt mqtt://127.0.0.1:1883"},
		{[]string{"--mqtt", "http://broker:1883"}, 2, `scheme "http", want mqtt://host:1883 or mqtts://host:8883`},
		{[]string{"--mqtt", "mqtt://dev1:secret@broker"}, 2, "the device's user name and password are derived from its key"},
		{[]string{"--mqtt-ca", notPEM}, 2, "--mqtt-ca needs --mqtt"},
		{[]string{"--mqtt", "mqtt://broker", "--mqtt-min-interval", "0s"}, 2, "--mqtt-min-interval 0s: want a positive duration"},
		{[]string{"--mqtt", "mqtts://broker", "--mqtt-ca", filepath.Join(dir, "missing.pem")}, 1, "fota: error: --mqtt-ca: read mqtt broker CA file: open " + filepath.Join(dir, "missing.pem")},
		{[]string{"--mqtt", "mqtts://broker", "--mqtt-ca", notPEM}, 1, "fota: error: --mqtt-ca: mqtt broker CA file " + notPEM + " holds no PEM certificate"},
	} {
		r := run(t, append([]string{"device", "run"}, row.args...)...)
		r.expect(t, row.code, "", row.stderr)
		if strings.Contains(r.stderr, "secret") {
			t.Fatalf("%q: the error shows the URL's password: %s", row.args, r.stderr)
		}
	}
	run(t, "device", "run", "--help").expect(t, 0, "the password is derived from the device key", "")
}
