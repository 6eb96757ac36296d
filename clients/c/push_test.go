package cclient_test

import (
	"bufio"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ecowatt/fota/internal/testserver"
)

// TestPushNotify: a notification (SIGUSR1 to fota-device-c, which calls
// fota_client_notify from its signal handler, as firmware does from its
// MQTT task) makes the device check at once instead of at its hour-long
// timer; five more, delivered one by one while it waits out the minimum
// interval, make one check, no sooner than that interval after the last.
func TestPushNotify(t *testing.T) {
	const minInterval = 3 * time.Second
	srv := testserver.New(t)
	tap := srv.Tap()
	d := newCDev(t, srv, "c1", slotSize, 0)
	d.server = tap.URL
	args := slices.DeleteFunc(d.runArgs("--check-interval", "3600", "--push-min-interval", "3"),
		func(a string) bool { return a == "--once" })
	dev := startDevice(t, d.bin, args)

	checks := func() int {
		t.Helper()
		c, err := tap.Checks()
		if err != nil {
			t.Fatal(err)
		}
		return len(c)
	}
	dev.waitLine(t, "result ", 10*time.Second)
	if n := checks(); n != 1 {
		t.Fatalf("after the boot check the server saw %d check-ins, want 1", n)
	}

	// The timer says an hour: a check within seconds is the notification's.
	dev.signal(t)
	dev.waitLine(t, "result ", 10*time.Second)
	second := time.Now()
	if n := checks(); n != 2 {
		t.Fatalf("after a notification: %d check-ins, want 2", n)
	}

	// Within the interval: five notifications, each taken apart (the device
	// says so), one check for all, not before the interval is over (the
	// device's clock counts whole seconds: a second less).
	for i := 0; i < 5; i++ {
		dev.signal(t)
		dev.waitLine(t, "push ", 5*time.Second)
	}
	dev.waitLine(t, "result ", 10*time.Second)
	if gap, least := time.Since(second), minInterval-1500*time.Millisecond; gap < least {
		t.Fatalf("the pushed check came %v after the last one, want at least %v", gap, least)
	}
	// A second check for the same notifications would come one interval
	// later: wait that out, and a little more.
	time.Sleep(minInterval + time.Second)
	if n := checks(); n != 3 {
		t.Fatalf("five notifications within the interval made %d check-ins, want 1 (3 in all, saw %d)", n-2, n)
	}
}

// device is a running fota-device-c whose stdout lines the test reads.
type device struct {
	pid   int
	lines chan string
}

func startDevice(t *testing.T, bin string, args []string) *device {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("device stderr:\n%s", stderr.String())
		}
	})
	d := &device{pid: cmd.Process.Pid, lines: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			d.lines <- sc.Text()
		}
		close(d.lines)
	}()
	return d
}

// waitLine waits for the next stdout line starting with prefix, failing on
// an error line, the device's exit, or the deadline.
func (d *device) waitLine(t *testing.T, prefix string, within time.Duration) string {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case line, ok := <-d.lines:
			if !ok {
				t.Fatalf("the device exited waiting for %q", prefix)
			}
			if strings.HasPrefix(line, "error ") {
				t.Fatalf("device: %s", line)
			}
			if strings.HasPrefix(line, prefix) {
				return line
			}
		case <-deadline:
			t.Fatalf("no %q line from the device within %v", prefix, within)
		}
	}
}

func (d *device) signal(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(d.pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
}
