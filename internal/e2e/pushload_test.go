package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ecowatt/fota/internal/loadgen"
	"github.com/ecowatt/fota/internal/testserver"
	"github.com/ecowatt/fota/keys"
)

var (
	pushDevices = flag.Int("push-devices", 10000, "BenchmarkPushFanout: simulated devices")
	pushBroker  = flag.String("push-broker", "embedded", "BenchmarkPushFanout: embedded (fota serve --mqtt-listen) or mosquitto (an external broker, --mqtt-broker)")
	pushDB      = flag.String("push-db", "", "BenchmarkPushFanout: a PostgreSQL DSN to serve from instead of SQLite")
)

// BenchmarkPushFanout: -push-devices devices (10,000) subscribe at the
// broker, a rollout to all of them is published, and each checks in when
// notified (loadgen.RunPush, as fota load --mqtt, in this process; the
// server is a fota serve process). It reports the time from the publish to
// every device's check-in, how many checked in within 5 s, and the
// server's resident memory at its peak. Targets (issue 17): all within
// 5 s, server RSS under 300 MiB. Run it with -benchtime 1x:
//
//	go test ./internal/e2e -run XXX -bench PushFanout -benchtime 1x
//	go test ./internal/e2e -run XXX -bench PushFanout -benchtime 1x -push-broker mosquitto
func BenchmarkPushFanout(b *testing.B) {
	dir := b.TempDir()
	fota(b, dir, nil, "keys", "init", "--dir", "keys")
	serve := []string{"--max-conns-per-client", "0", "--log-level", "warn"}
	if *pushDB != "" {
		serve = append(serve, "--db", *pushDB)
	}
	var mqttURL, token string
	var afterRegister func([]string) error
	switch *pushBroker {
	case "embedded":
		serve = append(serve, "--mqtt-listen", "127.0.0.1:0")
	case "mosquitto":
		bin := testserver.Mosquitto(b)
		port := freePort(b)
		mqttURL = "mqtt://127.0.0.1:" + port
		// mosquitto needs the server's account before the server starts,
		// and the devices' once fota load has registered them: the files
		// are written again then, and mosquitto reloads them (SIGHUP).
		acl := []string{"mqtt", "acl", "--passwd", "mosquitto.passwd", "--acl", "mosquitto.acl", "--force", "--data", "data"}
		if *pushDB != "" {
			acl = append(acl[:len(acl)-2], "--db", *pushDB)
		}
		// A first start makes the database fota mqtt acl reads (and
		// prints the admin token, once).
		first := startServer(b, dir, storeFlags()...)
		token = first.token
		first.stop(b)
		fota(b, dir, nil, acl...)
		writeMosquittoConf(b, dir, port)
		broker := exec.Command(bin, "-c", "mosquitto.conf")
		broker.Dir = dir
		if err := broker.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { broker.Process.Kill(); broker.Wait() })
		waitListening(b, "127.0.0.1:"+port)
		serve = append(serve, "--mqtt-broker", mqttURL, "--mqtt-password-file", "fota-server.password")
		afterRegister = func([]string) error {
			fota(b, dir, nil, acl...) // keeps fota-server.password
			if err := broker.Process.Signal(syscall.SIGHUP); err != nil {
				return err
			}
			time.Sleep(time.Second) // mosquitto reloads between packets
			return nil
		}
	default:
		b.Fatalf("-push-broker %q: want embedded or mosquitto", *pushBroker)
	}
	srv := startServer(b, dir, serve...)
	if mqttURL == "" {
		mqttURL = srv.mqtt
	}
	if srv.token == "" {
		srv.token = token
	}
	signer, err := keys.LoadSigningKey(filepath.Join(dir, "keys", keys.SigningKeyFile))
	if err != nil {
		b.Fatal(err)
	}
	fwKey, err := keys.LoadFirmwareKey(filepath.Join(dir, "keys", keys.FirmwareKeyFile))
	if err != nil {
		b.Fatal(err)
	}
	pid := srv.cmd.Process.Pid
	for b.Loop() {
		rep, err := loadgen.RunPush(context.Background(), loadgen.PushConfig{Config: loadgen.Config{Server: srv.url, Token: srv.token,
			Devices: *pushDevices, Signer: signer, FirmwareKey: fwKey}, MQTT: mqttURL, Wait: 2 * time.Minute, AfterRegister: afterRegister})
		if err != nil {
			b.Fatalf("push run: %v\nserver:\n%s", err, srv.out)
		}
		peak := statusKiB(b, pid, "VmHWM")
		b.ReportMetric(rep.AllS, "s-all-checked-in")
		b.ReportMetric(rep.P50S, "s-p50")
		b.ReportMetric(float64(rep.Within5s), "within-5s")
		b.ReportMetric(float64(peak)/1024, "MiB-peak-RSS")
		b.Logf("%d devices: subscribed %d in %.1f s, notified %d (spread %d ms), checked in %d (%d offered), within 5 s %d, p50 %.2f s, p90 %.2f s, p99 %.2f s, all %.2f s; check p50 %.1f ms p99 %.1f ms; errors %v; server peak RSS %.0f MiB",
			rep.Devices, rep.Subscribed, rep.ConnectS, rep.Notified, rep.SpreadMS, rep.CheckedIn, rep.Offered, rep.Within5s, rep.P50S, rep.P90S, rep.P99S,
			rep.AllS, rep.Check.P50ms, rep.Check.P99ms, rep.Errors, float64(peak)/1024)
		if rep.CheckedIn < rep.Devices {
			b.Errorf("%d of %d devices did not check in", rep.Devices-rep.CheckedIn, rep.Devices)
		}
	}
	srv.stop(b)
}

// storeFlags are the store options of commands run beside the benchmark's
// server.
func storeFlags() []string {
	if *pushDB != "" {
		return []string{"--db", *pushDB}
	}
	return nil // startServer's --data data
}

// statusKiB reads a kB field of /proc/PID/status (VmRSS, VmHWM).
func statusKiB(t testing.TB, pid int, field string) int {
	t.Helper()
	buf, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(field + `:\s+(\d+) kB`).FindSubmatch(buf)
	if m == nil {
		t.Fatalf("no %s in /proc/%d/status", field, pid)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}
