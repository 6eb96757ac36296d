package e2e

import (
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ecowatt/fota/internal/logbuf"
	"github.com/ecowatt/fota/internal/testserver"
)

// startPushDevice runs `fota device run` on a 1-hour timer: only push can
// make it check again after its first check. mqtt "" runs it without push.
func startPushDevice(t *testing.T, dir, id, mqtt string, extra ...string) *deviceProc {
	t.Helper()
	args := []string{"device", "run", "--credentials", id + ".json", "--keys-h", id + "_keys.h", "--state", filepath.Join("devices", id),
		"--version", "1.0.3", "--check-interval", "1h", "--poll-interval", "50ms", "--upload-interval", "1s"}
	if mqtt != "" {
		args = append(args, "--mqtt", mqtt, "--mqtt-min-interval", "1s")
	}
	return runDevice(t, dir, append(args, extra...)...)
}

// runDevice starts fota with args (a device run) in dir, its output
// kept; it is killed when the test ends.
func runDevice(t *testing.T, dir string, args ...string) *deviceProc {
	t.Helper()
	cmd := exec.Command(fotaBin, args...)
	cmd.Dir = dir
	p := &deviceProc{cmd: cmd, out: &logbuf.Buffer{}}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return p
}

func waitFor(t *testing.T, p *deviceProc, what string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(p.out.String(), what) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %s:\n%s", what, within, p.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pushFleet makes keys, a 1.0.4 release and two native devices: one that
// listens for push and one that does not.
func pushFleet(t *testing.T, dir string, env []string) {
	t.Helper()
	fota(t, dir, env, "firmware", "sample", "--version", "1.0.4", "--size", "256KiB", "-o", "app.bin")
	fota(t, dir, env, "release", "build", "--keys", "keys", "-o", "app.fota", "app.bin")
	for _, id := range []string{"push-1", "timer-1"} {
		fota(t, dir, env, "device", "add", "--id", id, "--hardware", "esp32", "--version", "1.0.3",
			"--credentials", id+".json", "--keys-h", id+"_keys.h", "--keys", "keys")
	}
}

// runPush: both devices make their first check (nothing to do), then a
// release is published with a rollout to all. The device on push updates
// and confirms; the one on its 1-hour timer does not hear of it.
func runPush(t *testing.T, dir string, env []string, mqtt string) {
	t.Helper()
	pushed := startPushDevice(t, dir, "push-1", mqtt)
	timer := startPushDevice(t, dir, "timer-1", "")
	waitFor(t, pushed, pushSubscribedLine, 30*time.Second)
	// Both made their first check (a device's first request sets its last
	// seen): from now on only push can make one check again.
	deadline := time.Now().Add(30 * time.Second)
	for {
		list := fota(t, dir, env, "device", "list")
		if !strings.Contains(lineOf(list, "push-1 "), "never") && !strings.Contains(lineOf(list, "timer-1 "), "never") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the devices did not check in:\n%s", list)
		}
		time.Sleep(100 * time.Millisecond)
	}
	published := time.Now()
	fota(t, dir, env, "release", "publish", "--rollout", "all", "app.fota")
	waitFor(t, pushed, "confirmed (running 1.0.4)", 60*time.Second)
	t.Logf("push: published to confirmed in %s", time.Since(published).Round(time.Millisecond))
	if strings.Contains(timer.out.String(), "1.0.4") {
		t.Fatalf("the device without push heard of 1.0.4 before its timer:\n%s", timer.out)
	}
	for _, p := range []*deviceProc{pushed, timer} {
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.cmd.Wait()
	}
	list := fota(t, dir, env, "device", "list")
	if !strings.Contains(lineOf(list, "push-1 "), "1.0.4") || !strings.Contains(lineOf(list, "timer-1 "), "1.0.3") {
		t.Fatalf("device list after the push:\n%s", list)
	}
}

func lineOf(text, prefix string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// TestPushWakesDevice: fota serve --mqtt-listen runs the broker; a device
// on a 1-hour timer updates within seconds of a rollout starting.
func TestPushWakesDevice(t *testing.T) {
	dir := t.TempDir()
	fota(t, dir, nil, "keys", "init", "--dir", "keys")
	srv := startServer(t, dir, "--mqtt-listen", "127.0.0.1:0")
	if srv.mqtt == "" {
		t.Fatalf("fota serve --mqtt-listen printed no broker address\n%s", srv.out)
	}
	env := []string{"FOTA_SERVER=" + srv.url, "FOTA_TOKEN=" + srv.token}
	pushFleet(t, dir, env)
	runPush(t, dir, env, srv.mqtt)
	// What an operator watches: the broker's devices and notifications.
	body := srv.metrics(t)
	for _, want := range []string{"fota_push_connected 1", "fota_push_devices_connected ", `fota_push_notifications_total{result="delivered"} 1`,
		`fota_push_notifications_total{result="dropped"} 0`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, grepLines(string(body), "fota_push"))
		}
	}
	srv.stop(t)
}

// TestPushThroughMosquitto: the same through an external broker, as
// several replicas run it: `fota mqtt acl` writes mosquitto's password and
// ACL files, mosquitto runs with them, fota serve publishes through it.
func TestPushThroughMosquitto(t *testing.T) {
	bin := testserver.Mosquitto(t)
	dir := t.TempDir()
	fota(t, dir, nil, "keys", "init", "--dir", "keys")
	// One address for both starts: the devices' credentials name it.
	addr := "127.0.0.1:" + freePort(t)
	srv := startServer(t, dir, "--addr", addr)
	env := []string{"FOTA_SERVER=" + srv.url, "FOTA_TOKEN=" + srv.token}
	pushFleet(t, dir, env)
	srv.stop(t)

	fota(t, dir, env, "mqtt", "acl", "--data", "data", "--passwd", "mosquitto.passwd", "--acl", "mosquitto.acl")
	port := freePort(t)
	writeMosquittoConf(t, dir, port)
	broker := exec.Command(bin, "-c", "mosquitto.conf")
	broker.Dir = dir
	brokerLog := &logbuf.Buffer{}
	broker.Stdout, broker.Stderr = brokerLog, brokerLog
	if err := broker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		broker.Process.Kill()
		broker.Wait()
		if t.Failed() {
			t.Logf("mosquitto:\n%s", brokerLog)
		}
	})
	url := "mqtt://127.0.0.1:" + port
	waitListening(t, "127.0.0.1:"+port)
	srv = startServer(t, dir, "--addr", addr, "--mqtt-broker", url, "--mqtt-password-file", "fota-server.password")
	runPush(t, dir, env, url)
	srv.stop(t)
}

// pushSubscribedLine is what fota device run logs once it listens for
// notifications.
const pushSubscribedLine = ": push: subscribed to"

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func waitListening(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writeMosquittoConf writes dir/mosquitto.conf: a loopback listener on
// port, no anonymous clients, the files fota mqtt acl wrote. mosquitto
// started as root drops to its own user before reading them, so it is told
// to stay the user that owns them.
func writeMosquittoConf(t testing.TB, dir, port string) {
	t.Helper()
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	conf := "user " + me.Username + "\nlistener " + port + " 127.0.0.1\nallow_anonymous false\nuse_username_as_clientid true\npassword_file mosquitto.passwd\n" +
		"acl_file mosquitto.acl\npersistence false\nlog_dest stderr\nmax_keepalive 65535\n"
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPushDeviceSaysWhyNotConnected: a device whose broker cannot be
// reached says so on its output, once, with what to check, and goes on
// checking on its timer.
func TestPushDeviceSaysWhyNotConnected(t *testing.T) {
	dir := t.TempDir()
	fota(t, dir, nil, "keys", "init", "--dir", "keys")
	srv := startServer(t, dir)
	env := []string{"FOTA_SERVER=" + srv.url, "FOTA_TOKEN=" + srv.token}
	pushFleet(t, dir, env)
	p := startPushDevice(t, dir, "push-1", "mqtt://127.0.0.1:"+freePort(t))
	waitFor(t, p, "push-1: push: cannot connect (", 30*time.Second)
	waitFor(t, p, "(nothing listens there: check the address)", 5*time.Second)
	time.Sleep(2 * time.Second) // retries (1 s, then 2 s) say nothing new
	if n := strings.Count(p.out.String(), "push: cannot connect"); n != 1 {
		t.Fatalf("the same reason said %d times:\n%s", n, p.out)
	}
	srv.stop(t)
}
