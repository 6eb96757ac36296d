package agent_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/firmware"
)

// chunkGate fails chunk requests from chunk 32 on while failing is set,
// and records where each chunks request starts.
type chunkGate struct {
	mu      sync.Mutex
	failing bool
	fail    func(req *http.Request) (*http.Response, error)
	froms   []int
}

func (g *chunkGate) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/chunks") {
		from, _ := strconv.Atoi(req.URL.Query().Get("from"))
		g.mu.Lock()
		g.froms = append(g.froms, from)
		failing := g.failing
		g.mu.Unlock()
		if failing && from >= 32 {
			return g.fail(req)
		}
	}
	return http.DefaultTransport.RoundTrip(req)
}

// A download interrupted by the server or the network keeps its resume
// point, whatever the answer: the next check goes on from the last
// checkpoint (chunk 32), in a new session if the old one ended, and the
// server is not told of a failure.
func TestResumeStateSurvivesRefusalMidDownload(t *testing.T) {
	for _, row := range []struct {
		name string
		want string // in the error of the interrupted download
		fail func(h *harness, d *device) func(req *http.Request) (*http.Response, error)
	}{
		{"500", "server answered 500", func(*harness, *device) func(*http.Request) (*http.Response, error) {
			return answer{status: 500, code: "internal"}.response
		}},
		{"connection reset", "connection reset", func(*harness, *device) func(*http.Request) (*http.Response, error) {
			return answer{}.response
		}},
		{"401 unauthorized", "server answered 401", func(*harness, *device) func(*http.Request) (*http.Response, error) {
			return answer{status: 401, code: "unauthorized"}.response
		}},
		{"503 with a long Retry-After", "come back in 1h0m0s", func(*harness, *device) func(*http.Request) (*http.Response, error) {
			return answer{status: 503, code: "unavailable", retryAfter: "3600"}.response
		}},
		{"session ended by the server (410)", "server answered 410", func(h *harness, d *device) func(*http.Request) (*http.Response, error) {
			// Narrowing the device's policy ends its native session for real;
			// widening it again lets the device check in once more.
			return func(req *http.Request) (*http.Response, error) {
				ctx := context.Background()
				if err := h.admin.SetAPI(ctx, d.id, agent.APIEcoWatt); err != nil {
					return nil, err
				}
				if err := h.admin.SetAPI(ctx, d.id, agent.APINative); err != nil {
					return nil, err
				}
				return http.DefaultTransport.RoundTrip(req)
			}
		}},
	} {
		t.Run(row.name, func(t *testing.T) {
			h := newHarness(t)
			h.publish("1.0.4", firmware.Healthy, 64<<10)
			d := newDev(h, "dev1", agent.APINative)
			gate := &chunkGate{failing: true, fail: row.fail(h, d)}
			d.configHook = func(c *agent.Config) {
				c.HTTPClient = &http.Client{Transport: gate}
				c.Retry = agent.RetryPolicy{Attempts: 2, Base: time.Millisecond, Max: time.Millisecond}
			}
			if err := d.powerOn(); err != nil {
				t.Fatal(err)
			}
			first, err := d.agent.CheckOnce(context.Background())
			if err == nil || !strings.Contains(err.Error(), row.want) {
				t.Fatalf("interrupted download: %+v %v, want an error saying %q", first, err, row.want)
			}
			gate.mu.Lock()
			gate.failing, gate.froms = false, nil
			gate.mu.Unlock()
			res, err := d.agent.CheckOnce(context.Background())
			if err != nil || !res.Updated {
				t.Fatalf("second check: %+v %v", res, err)
			}
			if len(gate.froms) == 0 || gate.froms[0] != 32 {
				t.Fatalf("after %q the download went on from chunks %v, want 32 first (the last checkpoint)", row.name, gate.froms)
			}
			if evs := h.events(d.id); countOf(evs, "failed 1.0.4") != 0 {
				t.Fatalf("a failure was reported: %v", evs)
			}
			d.configHook = nil
			d.settle(t, nil)
			if d.running() != "1.0.4" {
				t.Fatalf("running %s", d.running())
			}
		})
	}
}
