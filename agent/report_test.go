package agent_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/firmware"
)

// answer is a canned error answer, or a connection reset for status 0.
type answer struct {
	status     int
	code       string
	retryAfter string
}

func (a answer) response(req *http.Request) (*http.Response, error) {
	if a.status == 0 {
		return nil, errReset
	}
	h := http.Header{"Date": {time.Now().UTC().Format(http.TimeFormat)}, "Content-Type": {"application/json"}}
	if a.retryAfter != "" {
		h.Set("Retry-After", a.retryAfter)
	}
	body := `{"error":"simulated","code":"` + a.code + `"}`
	if a.code == "" {
		h.Set("Content-Type", "text/html")
		body = "<html>bad gateway</html>"
	}
	return &http.Response{StatusCode: a.status, Header: h, Body: io.NopCloser(strings.NewReader(body)), Request: req}, nil
}

// reportGate answers report requests from a script of canned answers (one
// per request, then the real server), and counts them and the 401s.
type reportGate struct {
	mu      sync.Mutex
	script  []answer
	reports int // report requests that reached the server
	faked   int // report requests answered from the script
	status  map[int]int
}

func (g *reportGate) RoundTrip(req *http.Request) (*http.Response, error) {
	isReport := strings.HasSuffix(req.URL.Path, "/report") || strings.HasPrefix(req.URL.Path, "/ota/complete") ||
		strings.HasPrefix(req.URL.Path, "/ota/verify")
	g.mu.Lock()
	if isReport && len(g.script) > 0 {
		a := g.script[0]
		g.script = g.script[1:]
		g.faked++
		g.mu.Unlock()
		return a.response(req)
	}
	if isReport {
		g.reports++
	}
	g.mu.Unlock()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil {
		g.mu.Lock()
		if g.status == nil {
			g.status = map[int]int{}
		}
		g.status[resp.StatusCode]++
		g.mu.Unlock()
	}
	return resp, err
}

func (g *reportGate) counts() (reports, faked int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.reports, g.faked
}

// logBuffer collects an agent's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func countOf(events []string, ev string) int {
	n := 0
	for _, e := range events {
		if e == ev {
			n++
		}
	}
	return n
}

// installed is a device that downloaded and marked 1.0.4 and is about to
// boot it; its reports so far reached the server.
func installed(t *testing.T, api string) (*harness, *device) {
	t.Helper()
	h := newHarness(t)
	h.publish("1.0.4", firmware.Healthy, 16<<10)
	d := newDev(h, "dev1", api)
	if res, err := d.cycle(); err != nil || !res.Updated {
		t.Fatalf("install: %+v %v", res, err)
	}
	return h, d
}

// A device whose clock is ten minutes off is refused as stale by the
// server; it takes the server's clock from the refusal and the server
// hears of the update and of its confirm. Today's agent dropped the
// confirm at its first 401.
func TestClockOffDeviceConfirms(t *testing.T) {
	for _, row := range []struct {
		name      string
		skew      time.Duration
		fromStart bool // off during the download too, or only after the reboot into 1.0.4
	}{
		{"behind after the reboot", -10 * time.Minute, false},
		{"ahead after the reboot", 10 * time.Minute, false},
		{"behind from the start", -10 * time.Minute, true},
		{"ahead from the start", 10 * time.Minute, true},
	} {
		t.Run(row.name, func(t *testing.T) {
			h := newHarness(t)
			h.publish("1.0.4", firmware.Healthy, 16<<10)
			d := newDev(h, "dev1", agent.APINative)
			gate := &reportGate{}
			skew := time.Duration(0)
			d.configHook = func(c *agent.Config) {
				c.HTTPClient = &http.Client{Transport: gate}
				c.Now = func() time.Time { return time.Now().Add(skew) }
			}
			if row.fromStart {
				skew = row.skew
			}
			if res, err := d.cycle(); err != nil || !res.Updated {
				t.Fatalf("install: %+v %v (events %v)", res, err, h.events(d.id))
			}
			skew = row.skew // the clock lost its time over the reboot
			gate.status = nil
			if err := d.powerOn(); err != nil {
				t.Fatal(err)
			}
			if err := d.selfTest(); err != nil {
				t.Fatalf("confirm: %v", err)
			}
			evs := h.events(d.id)
			if countOf(evs, "confirmed 1.0.4") != 1 {
				t.Fatalf("the server did not record the confirm: %v", evs)
			}
			dev, err := h.admin.Device(context.Background(), d.id)
			if err != nil || dev.Device.Version != "1.0.4" {
				t.Fatalf("server has the device on %+v (%v)", dev, err)
			}
			// The corrected clock is kept: one refusal on this boot, none after.
			if _, err := d.agent.CheckOnce(context.Background()); err != nil {
				t.Fatalf("check after the confirm: %v", err)
			}
			if n := gate.status[http.StatusUnauthorized]; n != 1 {
				t.Fatalf("%d refusals on the boot into 1.0.4, want 1 (answers %v)", n, gate.status)
			}
			if reports, _ := gate.counts(); reports == 0 {
				t.Fatal("no report reached the server")
			}
		})
	}
}

// A report that meets transient failures (500, a reset connection, 429)
// is retried with backoff within a Flush, kept when that does not get it
// through, retried at the next check on the timer, kept over a reboot,
// and reaches the server once, when the server takes it.
func TestReportRetriedUntilAccepted(t *testing.T) {
	for _, api := range []string{agent.APINative, agent.APIEcoWatt} {
		t.Run(api, func(t *testing.T) {
			h, d := installed(t, api)
			gate := &reportGate{script: []answer{
				{status: 500, code: "internal"}, {status: 0}, // the confirm's own Flush: both attempts fail
				{status: 429, code: "too_many", retryAfter: "30"}, {status: 503, code: "unavailable"}, // the next check
				{status: 0}, // the reboot: one reset, then through
			}}
			var mu sync.Mutex
			var sleeps []time.Duration
			d.configHook = func(c *agent.Config) {
				c.HTTPClient = &http.Client{Transport: gate}
				c.Retry = agent.RetryPolicy{Attempts: 2, Base: 10 * time.Millisecond, Max: time.Minute}
				c.Sleep = func(ctx context.Context, d time.Duration) error {
					mu.Lock()
					sleeps = append(sleeps, d)
					mu.Unlock()
					return nil
				}
			}
			if err := d.powerOn(); err != nil {
				t.Fatal(err)
			}
			if err := d.selfTest(); err != nil {
				t.Fatalf("confirm: %v", err)
			}
			// confirmedBy says whether the server may have the confirm after a
			// step: on the EcoWatt API a check-in on the new version confirms
			// (the original firmware reports nothing), on the native API only
			// the report does.
			step := func(name string, wantFaked, wantSleeps int, confirmedBy bool) {
				t.Helper()
				_, faked := gate.counts()
				mu.Lock()
				n := len(sleeps)
				mu.Unlock()
				if faked != wantFaked || n != wantSleeps {
					t.Fatalf("%s: %d report attempts failed, %d sleeps (%v); want %d and %d", name, faked, n, sleeps, wantFaked, wantSleeps)
				}
				if c := countOf(h.events(d.id), "confirmed 1.0.4"); c != 0 && !confirmedBy {
					t.Fatalf("%s: the server recorded the confirm while every report failed", name)
				}
			}
			step("confirm", 2, 1, false)
			if _, err := d.agent.CheckOnce(context.Background()); err != nil {
				t.Fatalf("check: %v", err)
			}
			step("next check", 4, 2, api == agent.APIEcoWatt)
			if sleeps[1] < 30*time.Second {
				t.Fatalf("Retry-After 30 obeyed with a sleep of %v", sleeps[1])
			}
			if err := d.powerOn(); err != nil { // a new agent on the same flash
				t.Fatal(err)
			}
			step("reboot", 5, 3, true)
			if c := countOf(h.events(d.id), "confirmed 1.0.4"); c != 1 {
				t.Fatalf("the server recorded %d confirms: %v", c, h.events(d.id))
			}
			// Nothing is left to send.
			before, _ := gate.counts()
			if err := d.agent.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if after, _ := gate.counts(); after != before {
				t.Fatalf("%d more reports sent after the outbox emptied", after-before)
			}
		})
	}
}

// Each refusal of a report by its error code: refusals retrying cannot fix
// drop the report with a log line; those that can change keep it for the
// next Flush; a status without a fota code (a proxy's 502) is retried at once.
func TestReportRefusals(t *testing.T) {
	for _, row := range []struct {
		answer answer
		kept   bool
	}{
		{answer{status: 410, code: "session_closed"}, false},
		{answer{status: 404, code: "not_found"}, false},
		{answer{status: 400, code: "invalid"}, false},
		{answer{status: 413, code: "too_large"}, false},
		{answer{status: 401, code: "unauthorized"}, true},
		{answer{status: 403, code: "forbidden"}, true},
		{answer{status: 409, code: "conflict"}, true},
		{answer{status: 502}, true},
	} {
		t.Run(strconv.Itoa(row.answer.status)+"_"+row.answer.code, func(t *testing.T) {
			h, d := installed(t, agent.APINative)
			gate := &reportGate{script: []answer{row.answer}}
			logs := &logBuffer{}
			d.configHook = func(c *agent.Config) {
				c.HTTPClient = &http.Client{Transport: gate}
				c.Logger = slog.New(slog.NewTextHandler(logs, nil))
			}
			if err := d.powerOn(); err != nil {
				t.Fatal(err)
			}
			if err := d.selfTest(); err != nil {
				t.Fatalf("confirm: %v", err)
			}
			if err := d.agent.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			reports, _ := gate.counts()
			confirms := countOf(h.events(d.id), "confirmed 1.0.4")
			if row.kept {
				if reports != 1 || confirms != 1 {
					t.Fatalf("%d reports reached the server, %d confirms recorded; want the kept report sent once (logs:\n%s)", reports, confirms, logs)
				}
				return
			}
			if reports != 0 || confirms != 0 {
				t.Fatalf("%d reports reached the server, %d confirms recorded, after a final refusal", reports, confirms)
			}
			if l := logs.String(); !strings.Contains(l, "report refused for good; dropping it") || !strings.Contains(l, "status=confirmed") {
				t.Fatalf("no log line for the dropped report:\n%s", l)
			}
		})
	}
}
