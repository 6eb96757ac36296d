package agent_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota/agent"
	"github.com/ecowatt/fota/internal/firmware"
)

// faultyTransport fails a share of requests in the ways networks do.
type faultyTransport struct {
	inner http.RoundTripper
	rate  float64
	rng   *rand.Rand
	mu    sync.Mutex
	kinds map[string]int
	down  bool // the server is gone for good
}

var errReset = errors.New("connection reset by peer (simulated)")

func (f *faultyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	down := f.down
	fault := f.rng.Float64() < f.rate
	kind := f.rng.IntN(6)
	f.mu.Unlock()
	if down {
		return nil, errors.New("dial tcp: connection refused (simulated)")
	}
	if !fault {
		return f.inner.RoundTrip(req)
	}
	name := []string{"reset", "500", "503", "truncated", "flipped", "stall"}[kind]
	f.mu.Lock()
	f.kinds[name]++
	f.mu.Unlock()
	switch name {
	case "reset":
		return nil, errReset
	case "500", "503":
		status := 500
		if name == "503" {
			status = 503
		}
		return &http.Response{StatusCode: status, Body: io.NopCloser(strings.NewReader(`{"error":"simulated","code":"internal"}`)),
			Header: http.Header{}, Request: req}, nil
	case "stall":
		<-req.Context().Done() // past the request timeout
		return nil, req.Context().Err()
	}
	resp, err := f.inner.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if name == "truncated" && len(body) > 1 {
		body = body[:len(body)/2]
	} else if len(body) > 0 {
		body[len(body)-1] ^= 0x40
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	return resp, nil
}

func TestUpdateThroughFaultyNetwork(t *testing.T) {
	for _, api := range []string{agent.APINative, agent.APIEcoWatt} {
		t.Run(api, func(t *testing.T) {
			h := newHarness(t)
			h.publish("1.0.4", firmware.Healthy, 64<<10)
			d := newDev(h, "dev1", api)
			ft := &faultyTransport{inner: http.DefaultTransport, rate: 0.3, rng: rand.New(rand.NewPCG(7, 9)), kinds: map[string]int{}}
			d.configHook = func(c *agent.Config) {
				c.HTTPClient = &http.Client{Transport: ft}
				c.RequestTimeout = 200 * time.Millisecond
				c.Retry = agent.RetryPolicy{Attempts: 10, Base: time.Millisecond, Max: 5 * time.Millisecond}
				c.ChunkRetries = 10
			}
			// A check may fail outright when faults pile up; the device just checks again.
			var res agent.Result
			var err error
			for try := 0; try < 5 && !res.Updated; try++ {
				if err = d.powerOn(); err != nil {
					t.Fatal(err)
				}
				res, err = d.agent.CheckOnce(context.Background())
			}
			if !res.Updated {
				t.Fatalf("update did not complete through a 30%% faulty network: %v (faults %v)", err, ft.kinds)
			}
			ft.rate = 0
			d.settle(t, nil)
			if d.running() != "1.0.4" {
				t.Fatalf("running %s", d.running())
			}
			t.Logf("faults injected: %v", ft.kinds)
		})
	}
}

func TestServerGoneKeepsRunningImage(t *testing.T) {
	h := newHarness(t)
	h.publish("1.0.4", firmware.Healthy, 64<<10)
	d := newDev(h, "dev1", agent.APINative)
	ft := &faultyTransport{inner: http.DefaultTransport, rng: rand.New(rand.NewPCG(1, 2)), kinds: map[string]int{}}
	var sleeps []time.Duration
	d.configHook = func(c *agent.Config) {
		c.HTTPClient = &http.Client{Transport: ft}
		c.Retry = agent.RetryPolicy{Attempts: 4, Base: 10 * time.Millisecond, Max: 40 * time.Millisecond}
		c.Sleep = func(ctx context.Context, d time.Duration) error { sleeps = append(sleeps, d); return nil }
	}
	if err := d.powerOn(); err != nil {
		t.Fatal(err)
	}
	ft.down = true
	_, err := d.agent.CheckOnce(context.Background())
	if err == nil || !strings.Contains(err.Error(), "gave up after 4 attempts") {
		t.Fatalf("check with the server gone: %v", err)
	}
	// Exponential backoff with jitter: each delay in [base*2^i/2, base*2^i], capped.
	for i, s := range sleeps {
		hi := min(10*time.Millisecond<<i, 40*time.Millisecond)
		if s < hi/2 || s > hi {
			t.Fatalf("retry %d slept %v, want %v..%v", i, s, hi/2, hi)
		}
	}
	if len(sleeps) != 3 {
		t.Fatalf("%d sleeps for 4 attempts", len(sleeps))
	}
	if d.agent.Progress().State != agent.StateError || d.running() != "1.0.3" {
		t.Fatalf("after giving up: %+v running %s", d.agent.Progress(), d.running())
	}
	st, _ := d.slots.Status()
	if st.Slots[0].State != agent.ImageValid || st.Next != 0 {
		t.Fatalf("boot state changed: %+v", st)
	}
}

// TestHMACFailuresAbandonSession: a chunk that never passes its HMAC is
// fetched ChunkRetries+1 times, then the session is abandoned with a
// clear error and reported failed; nothing of it reached a bootable slot.
func TestHMACFailuresAbandonSession(t *testing.T) {
	h := newHarness(t)
	h.publish("1.0.4", firmware.Healthy, 20<<10)
	d := newDev(h, "dev1", agent.APINative)
	flip := &flipChunks{inner: http.DefaultTransport}
	d.configHook = func(c *agent.Config) {
		c.HTTPClient = &http.Client{Transport: flip}
		c.ChunkRetries = 2
	}
	d.powerOn()
	_, err := d.agent.CheckOnce(context.Background())
	if !errors.Is(err, agent.ErrChunkMAC) || !strings.Contains(err.Error(), "abandoning the session") {
		t.Fatalf("persistent HMAC failure: %v", err)
	}
	if flip.count != 3 {
		t.Fatalf("fetched the bad chunk %d times, want 3", flip.count)
	}
	if evs := strings.Join(h.events(d.id), ", "); !strings.Contains(evs, "failed 1.0.4") {
		t.Fatalf("failure not reported: %s", evs)
	}
	st, _ := d.slots.Status()
	if st.Slots[1].State != agent.ImageEmpty || st.Next != 0 {
		t.Fatalf("slot state after abandoned download: %+v", st)
	}
}

// flipChunks corrupts chunk 5 in every native chunks answer that holds it,
// counting those answers.
type flipChunks struct {
	inner http.RoundTripper
	count int
}

func (f *flipChunks) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := f.inner.RoundTrip(req)
	if err != nil || !strings.Contains(req.URL.Path, "/chunks") {
		return resp, err
	}
	from, _ := strconv.Atoi(req.URL.Query().Get("from"))
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if from <= 5 {
		// Frames before chunk 5 are whole 1 KiB chunks with 40-byte headers.
		if at := (5-from)*(40+1024) + 40; at < len(body) {
			body[at] ^= 1
			f.count++
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// A device told to come back later (429 or 503 with Retry-After) does not
// hammer the server: within a retry's reach it waits as long as told,
// beyond it it leaves the check to its timer.
func TestRetryAfterIsObeyed(t *testing.T) {
	for _, api := range []string{agent.APINative, agent.APIEcoWatt} {
		t.Run(api, func(t *testing.T) {
			h := newHarness(t)
			h.publish("1.0.4", firmware.Healthy, 16<<10)
			d := newDev(h, "dev1", api)
			var mu sync.Mutex
			refusals, retryAfter := 0, "600"
			tooMany := roundTripFunc(func(req *http.Request) (*http.Response, error) {
				mu.Lock()
				defer mu.Unlock()
				if strings.HasSuffix(req.URL.Path, "/check") && refusals < 2 {
					refusals++
					return &http.Response{StatusCode: 429, Request: req, Header: http.Header{"Retry-After": {retryAfter}},
						Body: io.NopCloser(strings.NewReader(`{"error":"too many update sessions","code":"too_many"}`))}, nil
				}
				return http.DefaultTransport.RoundTrip(req)
			})
			var sleeps []time.Duration
			d.configHook = func(c *agent.Config) {
				c.HTTPClient = &http.Client{Transport: tooMany}
				c.Retry = agent.RetryPolicy{Attempts: 5, Base: time.Millisecond, Max: time.Minute}
				c.Sleep = func(ctx context.Context, d time.Duration) error { sleeps = append(sleeps, d); return nil }
			}
			if err := d.powerOn(); err != nil {
				t.Fatal(err)
			}
			// 600 s is past what a retry may wait: one request, no sleep.
			_, err := d.agent.CheckOnce(context.Background())
			if err == nil || !strings.Contains(err.Error(), "asks to come back in 10m0s") || refusals != 1 || len(sleeps) != 0 {
				t.Fatalf("after a 429 with Retry-After 600: err %v, %d requests, sleeps %v", err, refusals, sleeps)
			}
			// 7 s is within reach: one sleep of at least 7 s, then the update.
			mu.Lock()
			retryAfter = "7"
			mu.Unlock()
			res, err := d.agent.CheckOnce(context.Background())
			if err != nil || !res.Updated {
				t.Fatalf("after a 429 with Retry-After 7: %+v %v", res, err)
			}
			if len(sleeps) != 1 || sleeps[0] < 7*time.Second {
				t.Fatalf("slept %v, want once for at least 7s", sleeps)
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
