package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// dashboardClient signs in to a fota serve process's dashboard as a
// browser does and keeps the session cookie.
func dashboardClient(t testing.TB, base, name, password string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(base + "/signin")
	if err != nil {
		t.Fatal(err)
	}
	var page strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&page)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page.String())
	if m == nil {
		t.Fatalf("no sign-in form at %s/signin", base)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/signin", strings.NewReader(url.Values{"csrf": {m[1]}, "name": {name}, "password": {password}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/fleet" {
		t.Fatalf("sign in as %s: %d %s", name, resp.StatusCode, resp.Header.Get("Location"))
	}
	return c
}

// addUser runs fota user add with the password on stdin.
func addUser(t testing.TB, dir, name, role, password string) {
	t.Helper()
	cmd := exec.Command(fotaBin, "user", "add", "--data", "data", "--name", name, "--role", role, "--password-stdin")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fota user add: %v\n%s", err, out)
	}
}

// TestServeDashboard runs the dashboard in a real fota serve: a user made
// with fota user add while it runs signs in, sees the fleet, and a live
// stream left open does not hold up a graceful stop.
func TestServeDashboard(t *testing.T) {
	dir := t.TempDir()
	fota(t, dir, nil, "keys", "init", "--dir", "keys")
	srv := startServer(t, dir)
	addUser(t, dir, "ana", "admin", "correct horse battery")
	c := dashboardClient(t, srv.url, "ana", "correct horse battery")
	resp, err := c.Get(srv.url + "/fleet")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("fleet page: %v %v", err, resp)
	}
	resp.Body.Close()
	stream, err := c.Get(srv.url + "/events/live")
	if err != nil || stream.StatusCode != http.StatusOK {
		t.Fatalf("live events: %v %v", err, stream)
	}
	defer stream.Body.Close()
	start := time.Now()
	srv.stop(t)
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("fota serve took %s to stop with a live stream open", took)
	}
}

// rssKiB reads a process's resident set size.
func rssKiB(t testing.TB, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no VmRSS in /proc/%d/status", pid)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// BenchmarkDashboardStreams opens 200 live dashboards (the rollout page's
// stream, each on its own connection, as 200 browsers would) on a fota
// serve process with 50 devices in a rollout, pushes an update to all of
// them, and reports how much the server's resident memory grew: target
// under 20 MiB. Run it with -benchtime 1x.
func BenchmarkDashboardStreams(b *testing.B) {
	const dashboards = 200
	dir := b.TempDir()
	fota(b, dir, nil, "keys", "init", "--dir", "keys")
	fota(b, dir, nil, "firmware", "sample", "--version", "1.0.4", "--size", "64KiB", "-o", "app.bin")
	fota(b, dir, nil, "release", "build", "--keys", "keys", "-o", "app.fota", "app.bin")
	srv := startServer(b, dir)
	admin := []string{"FOTA_SERVER=" + srv.url, "FOTA_TOKEN=" + srv.token}
	for i := range 50 {
		fota(b, dir, admin, "device", "add", "--id", fmt.Sprintf("dev-%02d", i), "--hardware", "esp32", "--version", "1.0.3",
			"--credentials", fmt.Sprintf("dev-%02d.json", i))
	}
	fota(b, dir, admin, "release", "publish", "app.fota")
	fota(b, dir, admin, "rollout", "create", "--release", "1.0.4", "--waves", "10%,100%")
	addUser(b, dir, "vic", "viewer", "correct horse battery")
	c := dashboardClient(b, srv.url, "vic", "correct horse battery")
	// Warm up: the pages once, so the server's steady state is measured.
	for _, p := range []string{"/fleet", "/rollouts/1", "/events"} {
		resp, err := c.Get(srv.url + p)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
	time.Sleep(time.Second)
	pid := srv.cmd.Process.Pid
	before := rssKiB(b, pid)
	b.ResetTimer()
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		first, pushed := make(chan struct{}, dashboards), make(chan struct{}, dashboards)
		transport := &http.Transport{MaxIdleConnsPerHost: -1, DisableKeepAlives: true}
		sc := &http.Client{Jar: c.Jar, Transport: transport}
		for range dashboards {
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.url+"/rollouts/1/live", nil)
				resp, err := sc.Do(req)
				if err != nil {
					return
				}
				defer resp.Body.Close()
				lines := bufio.NewScanner(resp.Body)
				lines.Buffer(make([]byte, 256<<10), 256<<10)
				frames := 0
				for lines.Scan() {
					if lines.Text() == "event: update" {
						frames++
						switch frames {
						case 1:
							first <- struct{}{}
						case 2:
							pushed <- struct{}{}
						}
					}
				}
			})
		}
		waitAll(b, first, dashboards, "first frames")
		// A change to the rollout: every dashboard gets the new render.
		fota(b, dir, admin, "rollout", "pause", "1", "--reason", "load test")
		waitAll(b, pushed, dashboards, "pushed updates")
		after := rssKiB(b, pid)
		extra := float64(after-before) / 1024
		b.ReportMetric(extra, "MiB-extra-RSS")
		b.ReportMetric(float64(after)/1024, "MiB-RSS")
		if extra >= 20 {
			b.Errorf("%d dashboards took %.1f MiB more resident memory (%d KiB before, %d after); the target is under 20", dashboards, extra, before, after)
		}
		cancel()
		wg.Wait()
		transport.CloseIdleConnections()
		fota(b, dir, admin, "rollout", "resume", "1")
	}
}

func waitAll(b *testing.B, ch chan struct{}, n int, what string) {
	b.Helper()
	deadline := time.After(30 * time.Second)
	for i := range n {
		select {
		case <-ch:
		case <-deadline:
			b.Fatalf("%d of %d %s within 30 s", i, n, what)
		}
	}
}

// TestDemoDashboard: fota demo --dashboard leaves its server running with
// a user to sign in as, whose dashboard shows the demo's halted rollout,
// and stops on SIGINT.
func TestDemoDashboard(t *testing.T) {
	cmd := exec.Command(fotaBin, "demo", "--devices", "2", "--dashboard")
	cmd.Dir = t.TempDir()
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		re := regexp.MustCompile(`dashboard is at (http://\S+)/ : sign in as (\S+), password (\S+)`)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				line <- m[1:]
			}
		}
	}()
	var m []string
	select {
	case m = <-line:
	case <-time.After(90 * time.Second):
		t.Fatalf("fota demo --dashboard printed no sign-in line\n%s", stderr.String())
	}
	c := dashboardClient(t, m[0], m[1], m[2])
	resp, err := c.Get(m[0] + "/rollouts/2")
	if err != nil {
		t.Fatal(err)
	}
	var page strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&page)
	resp.Body.Close()
	if !strings.Contains(page.String(), "Halted") {
		t.Fatalf("the demo's second rollout is not shown halted:\n%.2000s", page.String())
	}
	cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("fota demo --dashboard after SIGINT: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("fota demo --dashboard did not stop on SIGINT")
	}
}
