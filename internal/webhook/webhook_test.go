package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/logbuf"
	"github.com/ecowatt/fota/internal/pgtest"
	"github.com/ecowatt/fota/internal/postgres"
	"github.com/ecowatt/fota/internal/sqlite"
	"github.com/ecowatt/fota/internal/storetest"
	"github.com/ecowatt/fota/protocol"
)

const secret = "whsec-test-0123456789abcdef"

// receiver is a webhook endpoint that checks every delivery as a real
// receiver should (signature, fresh timestamp, headers matching the body)
// and answers 500 to the first failFirst requests, 204 after.
type receiver struct {
	t         *testing.T
	now       func() time.Time
	failFirst int
	// block, if set, holds the first request until the client gives up,
	// and is closed as it arrives.
	block chan struct{}

	mu       sync.Mutex
	requests int
	attempts map[string][]time.Time // the signed times of each delivery's attempts
	accepted map[string]int
	events   map[string]protocol.WebhookEvent
}

func newReceiver(t *testing.T, now func() time.Time, failFirst int) (*receiver, *httptest.Server) {
	rc := &receiver{t: t, now: now, failFirst: failFirst, attempts: map[string][]time.Time{}, accepted: map[string]int{},
		events: map[string]protocol.WebhookEvent{}}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	return rc, srv
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if err := protocol.VerifyWebhook(r.Header, body, []byte(secret), rc.now(), 0); err != nil {
		rc.t.Errorf("a delivery that does not verify: %v", err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var ev protocol.WebhookEvent
	if err := json.Unmarshal(body, &ev); err != nil || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" ||
		r.Header.Get(protocol.HeaderWebhookDelivery) != ev.ID || r.Header.Get(protocol.HeaderWebhookEvent) != ev.Event {
		rc.t.Errorf("delivery %s %s with headers %v: %s", r.Method, r.URL, r.Header, body)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	rc.requests++
	n := rc.requests
	unix, _ := strconv.ParseInt(r.Header.Get(protocol.HeaderTimestamp), 10, 64) // VerifyWebhook parsed it
	rc.attempts[ev.ID] = append(rc.attempts[ev.ID], time.Unix(unix, 0))
	block := rc.block
	if n == 1 && block != nil {
		rc.mu.Unlock()
		close(block)
		<-r.Context().Done()
		return
	}
	defer rc.mu.Unlock()
	if n <= rc.failFirst {
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, "busy, try later")
		return
	}
	rc.accepted[ev.ID]++
	rc.events[ev.ID] = ev
	w.WriteHeader(http.StatusNoContent)
}

// check fails unless every delivery was accepted exactly once and the
// accepted events' details are exactly want.
func (rc *receiver) check(t *testing.T, want ...string) {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var got []string
	for id, n := range rc.accepted {
		if n != 1 {
			t.Errorf("delivery %s accepted %d times", id, n)
		}
		got = append(got, rc.events[id].Detail)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("accepted events %v, want %v", got, want)
	}
}

// seen returns the signed times of a delivery's attempts and the event
// it carried, if accepted.
func (rc *receiver) seen(id string) ([]time.Time, protocol.WebhookEvent) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.attempts[id], rc.events[id]
}

func (rc *receiver) count() (requests, accepted int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.requests, len(rc.accepted)
}

func openSQLite(t *testing.T, file string, clock *storetest.Clock) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	if clock != nil {
		s.SetClock(clock.Now)
	}
	return s
}

func addWebhook(t *testing.T, s fota.Store, url string) *fota.Webhook {
	t.Helper()
	w := &fota.Webhook{URL: url, Events: []string{"*"}, Secret: secret}
	if err := s.CreateWebhook(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	return w
}

func addEvents(t *testing.T, s fota.Store, details ...string) {
	t.Helper()
	for _, d := range details {
		if err := s.AddEvent(context.Background(), &fota.Event{Kind: fota.EventRolledBack, DeviceID: "d1", Detail: d}); err != nil {
			t.Fatal(err)
		}
	}
}

// doubling is a backoff without jitter: 10 s, 20 s, 40 s, ...
func doubling(attempt int) time.Duration { return FirstRetry << (attempt - 1) }

func deliver(t *testing.T, d *Dispatcher) {
	t.Helper()
	if _, err := d.Deliver(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func byID(t *testing.T, s fota.Store, webhookID int64) map[string]*fota.Delivery {
	t.Helper()
	ds, err := s.Deliveries(context.Background(), webhookID, 1000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*fota.Delivery{}
	for _, d := range ds {
		out[d.ID] = d
	}
	return out
}

// TestFailingReceiverGetsEveryEventOnce is the test: a receiver
// that fails the first 3 deliveries gets every event, each delivery id
// accepted exactly once, signed, with retries spaced by the backoff.
func TestFailingReceiverGetsEveryEventOnce(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	s := openSQLite(t, filepath.Join(t.TempDir(), "fota.db"), clock)
	defer s.Close()
	rc, srv := newReceiver(t, clock.Now, 3)
	w := addWebhook(t, s, srv.URL+"/hook/t0ken-in-path")
	addEvents(t, s, "detail-0", "detail-1", "detail-2", "detail-3", "detail-4")
	var logs logbuf.Buffer
	d := New(Config{Store: s, Now: clock.Now, Backoff: doubling, Workers: 2,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})

	deliver(t, d)
	if req, acc := rc.count(); req != 5 || acc != 2 {
		t.Fatalf("first round: %d requests, %d accepted; want 5, 2", req, acc)
	}
	clock.Advance(FirstRetry - time.Second)
	deliver(t, d)
	if req, _ := rc.count(); req != 5 {
		t.Fatalf("%d requests before the retries were due", req)
	}
	clock.Advance(time.Second)
	deliver(t, d)
	if req, acc := rc.count(); req != 8 || acc != 5 {
		t.Fatalf("after the backoff: %d requests, %d accepted; want 8, 5", req, acc)
	}
	for range 3 {
		clock.Advance(time.Hour)
		deliver(t, d)
	}
	if req, _ := rc.count(); req != 8 {
		t.Fatalf("%d requests after everything was delivered, want 8", req)
	}
	rc.check(t, "detail-0", "detail-1", "detail-2", "detail-3", "detail-4")

	retried := 0
	for id, dl := range byID(t, s, w.ID) {
		at, _ := rc.seen(id)
		if dl.State != fota.DeliveryDelivered || dl.Attempts != len(at) || dl.LastStatus != http.StatusNoContent || dl.LastError != "" {
			t.Fatalf("delivery %+v after %d attempts", dl, len(at))
		}
		if len(at) == 2 {
			retried++
			if gap := at[1].Sub(at[0]); gap != FirstRetry {
				t.Fatalf("retry %v after the first attempt, want the backoff %v", gap, FirstRetry)
			}
		}
	}
	if retried != 3 {
		t.Fatalf("%d deliveries retried, want 3", retried)
	}
	out := logs.String()
	if strings.Count(out, "webhook delivery failed; will retry") != 3 || !strings.Contains(out, "status=500") {
		t.Fatalf("logs do not say which attempts failed:\n%s", out)
	}
	for _, leak := range []string{secret, "t0ken-in-path", `"detail"`, "detail-", "busy, try later"} {
		if strings.Contains(out, leak) {
			t.Fatalf("logs show %q:\n%s", leak, out)
		}
	}
}

// TestRetriesFollowTheBackoff: one delivery refused three times is tried
// at 0, 10, 30 and 70 s (the backoff doubling), under the same id.
func TestRetriesFollowTheBackoff(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	start := clock.Now()
	s := openSQLite(t, filepath.Join(t.TempDir(), "fota.db"), clock)
	defer s.Close()
	rc, srv := newReceiver(t, clock.Now, 3)
	w := addWebhook(t, s, srv.URL)
	addEvents(t, s, "only")
	d := New(Config{Store: s, Now: clock.Now, Backoff: doubling})
	for range 100 {
		deliver(t, d)
		clock.Advance(time.Second)
	}
	rc.check(t, "only")
	var id string
	for k := range byID(t, s, w.ID) {
		id = k
	}
	attempts, _ := rc.seen(id)
	var offsets []time.Duration
	for _, at := range attempts {
		offsets = append(offsets, at.Sub(start))
	}
	if fmt.Sprint(offsets) != "[0s 10s 30s 1m10s]" {
		t.Fatalf("attempts at %v, want [0s 10s 30s 1m10s]", offsets)
	}
	if dl := byID(t, s, w.ID)[id]; dl.Attempts != 4 || dl.State != fota.DeliveryDelivered {
		t.Fatalf("delivery %+v", dl)
	}
}

// TestGivesUpAfter24Hours: a receiver that never answers 2xx is tried
// until 24 hours after the delivery was made, then the delivery fails and
// nothing more is sent.
func TestGivesUpAfter24Hours(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	s := openSQLite(t, filepath.Join(t.TempDir(), "fota.db"), clock)
	defer s.Close()
	rc, srv := newReceiver(t, clock.Now, 1<<30)
	w := addWebhook(t, s, srv.URL)
	addEvents(t, s, "doomed")
	var logs logbuf.Buffer
	d := New(Config{Store: s, Now: clock.Now, Backoff: func(int) time.Duration { return time.Hour },
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for range 30 {
		deliver(t, d)
		clock.Advance(time.Hour)
	}
	if req, _ := rc.count(); req != 25 {
		t.Fatalf("%d attempts, want 25 (hourly from 0 to 24 h)", req)
	}
	for _, dl := range byID(t, s, w.ID) {
		if dl.State != fota.DeliveryFailed || dl.Attempts != 25 || dl.LastStatus != 500 || dl.LastError != "HTTP 500: busy, try later" ||
			!dl.LastAttempt.Equal(dl.Created.Add(fota.DeliveryRetryFor)) {
			t.Fatalf("delivery %+v", dl)
		}
	}
	if n := strings.Count(logs.String(), "failed for good"); n != 1 {
		t.Fatalf("%d lines say it failed for good:\n%s", n, logs.String())
	}
	if ws, _ := s.Webhooks(context.Background()); ws[0].Failed != 1 || ws[0].Pending != 0 {
		t.Fatalf("webhook counts %+v", ws[0])
	}
}

// TestRedirectsNotFollowed: a 3xx is a failed attempt; the signed
// delivery never goes where it points.
func TestRedirectsNotFollowed(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	s := openSQLite(t, filepath.Join(t.TempDir(), "fota.db"), clock)
	defer s.Close()
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	redirect := httptest.NewServer(http.RedirectHandler(other.URL, http.StatusTemporaryRedirect))
	defer redirect.Close()
	w := addWebhook(t, s, redirect.URL)
	addEvents(t, s, "moved")
	deliver(t, New(Config{Store: s, Now: clock.Now, Backoff: doubling}))
	if elsewhere.Load() != 0 {
		t.Fatal("the delivery followed a redirect")
	}
	for _, dl := range byID(t, s, w.ID) {
		if dl.State != fota.DeliveryPending || dl.LastStatus != http.StatusTemporaryRedirect || !strings.HasPrefix(dl.LastError, "HTTP 307") {
			t.Fatalf("delivery %+v", dl)
		}
	}
}

// TestTransportErrorsKeepTheURLOut: Go's errors name the URL, which may
// hold the receiver's credential; neither the stored error nor the log
// shows it.
func TestTransportErrorsKeepTheURLOut(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	s := openSQLite(t, filepath.Join(t.TempDir(), "fota.db"), clock)
	defer s.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	url := closed.URL + "/hooks/cr3dential?key=k3y"
	closed.Close()
	w := addWebhook(t, s, url)
	addEvents(t, s, "nobody home")
	var logs logbuf.Buffer
	deliver(t, New(Config{Store: s, Now: clock.Now, Backoff: doubling, Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
	for _, dl := range byID(t, s, w.ID) {
		if dl.State != fota.DeliveryPending || dl.LastStatus != 0 || dl.LastError == "" {
			t.Fatalf("delivery %+v", dl)
		}
		for _, text := range []string{dl.LastError, logs.String()} {
			if strings.Contains(text, "cr3dential") || strings.Contains(text, "k3y") {
				t.Fatalf("the URL shows in %q", text)
			}
		}
	}
	if !strings.Contains(logs.String(), "connection refused") {
		t.Fatalf("the log does not say why:\n%s", logs.String())
	}
}

// TestRestartContinues: a server stopped mid-send, with a delivery
// leased and an event not yet fanned out, loses neither: the next one
// over the same database sends both, the leased one under its id, once
// its lease has run out.
func TestRestartContinues(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	file := filepath.Join(t.TempDir(), "fota.db")
	s := openSQLite(t, file, clock)
	rc, srv := newReceiver(t, clock.Now, 0)
	rc.block = make(chan struct{})
	w := addWebhook(t, s, srv.URL)
	addEvents(t, s, "in flight")

	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		New(Config{Store: s, Now: clock.Now, Backoff: doubling}).Deliver(ctx)
	}()
	<-rc.block // the first delivery is at the receiver
	addEvents(t, s, "recorded while stopping")
	stop()
	<-done
	s.Close()

	s = openSQLite(t, file, clock)
	defer s.Close()
	d := New(Config{Store: s, Now: clock.Now, Backoff: doubling})
	deliver(t, d)
	rc.check(t, "recorded while stopping")
	clock.Advance(DefaultLease)
	deliver(t, d)
	rc.check(t, "in flight", "recorded while stopping")
	for id, dl := range byID(t, s, w.ID) {
		// The attempt cut short by the stop was not recorded: the receiver
		// saw one more of the delivery in flight than the store counts.
		attempts, ev := rc.seen(id)
		seen := 1
		if ev.Detail == "in flight" {
			seen = 2
		}
		if dl.State != fota.DeliveryDelivered || dl.Attempts != 1 || len(attempts) != seen {
			t.Fatalf("delivery %+v of %q; the receiver saw %d attempts, want %d", dl, ev.Detail, len(attempts), seen)
		}
	}
}

// TestNotifyWakesRun: Run sends new events at once when notified, not at
// its next poll (an hour here).
func TestNotifyWakesRun(t *testing.T) {
	s := openSQLite(t, filepath.Join(t.TempDir(), "fota.db"), nil)
	defer s.Close()
	rc, srv := newReceiver(t, time.Now, 0)
	addWebhook(t, s, srv.URL)
	counted := &countingStore{WebhookStore: s}
	d := New(Config{Store: counted, Poll: time.Hour})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	defer func() { stop(); <-done }()
	waitFor(t, "the first round", func() bool { return counted.fanOuts.Load() > 0 })
	addEvents(t, s, "wake up")
	d.Notify()
	waitFor(t, "the notified delivery", func() bool { _, acc := rc.count(); return acc == 1 })
	rc.check(t, "wake up")
}

type countingStore struct {
	fota.WebhookStore
	fanOuts atomic.Int32
}

func (c *countingStore) FanOut(ctx context.Context, batch int) (int, bool, error) {
	n, more, err := c.WebhookStore.FanOut(ctx, batch)
	c.fanOuts.Add(1)
	return n, more, err
}

// waitFor polls cond until it holds, failing after 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 20 s", what)
		}
	}
}

// testReplicas runs two dispatchers, each over its own store handle on one
// database, as two replicas do, while events are recorded through both:
// the receiver, failing the first 3 requests, accepts every event once.
func testReplicas(t *testing.T, a, b fota.Store) {
	rc, srv := newReceiver(t, time.Now, 3)
	addWebhook(t, a, srv.URL)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var dispatchers []*Dispatcher
	for _, s := range []fota.Store{a, b} {
		d := New(Config{Store: s, Poll: 10 * time.Millisecond, Batch: 4, Backoff: func(int) time.Duration { return time.Millisecond }})
		dispatchers = append(dispatchers, d)
		wg.Go(func() { d.Run(ctx) })
	}
	var want []string
	for i := range 30 {
		s := []fota.Store{a, b}[i%2]
		want = append(want, fmt.Sprint("event-", i))
		addEvents(t, s, want[i])
	}
	waitFor(t, "30 events accepted", func() bool { _, acc := rc.count(); return acc == 30 })
	stop()
	wg.Wait()
	// Nothing is left to send, by either.
	for _, d := range dispatchers {
		deliver(t, d)
	}
	rc.check(t, want...)
}

func TestReplicasSQLite(t *testing.T) {
	file := filepath.Join(t.TempDir(), "fota.db")
	a := openSQLite(t, file, nil)
	defer a.Close()
	b := openSQLite(t, file, nil)
	defer b.Close()
	testReplicas(t, a, b)
}

func TestReplicasPostgres(t *testing.T) {
	dsn := pgtest.Schema(t, "fota_webhook_")
	var stores []fota.Store
	for range 2 {
		s, err := postgres.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores = append(stores, s)
	}
	testReplicas(t, stores[0], stores[1])
}

func TestBackoff(t *testing.T) {
	for attempt, base := range map[int]time.Duration{1: 10 * time.Second, 2: 20 * time.Second, 3: 40 * time.Second,
		9: 2560 * time.Second, 10: time.Hour, 40: time.Hour} {
		for range 50 {
			if got := Backoff(attempt); got > base || got < base*4/5 {
				t.Fatalf("Backoff(%d) = %v, want %v less at most a fifth", attempt, got, base)
			}
		}
	}
}

// stallingStore moves the clock on by a lease after each claim: the
// dispatcher stalled between claiming and sending.
type stallingStore struct {
	fota.WebhookStore
	clock *storetest.Clock
}

func (s stallingStore) ClaimDeliveries(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]*fota.Delivery, error) {
	ds, err := s.WebhookStore.ClaimDeliveries(ctx, now, lease, limit)
	s.clock.Advance(lease)
	return ds, err
}

// TestExpiredLeaseNotSent: a delivery whose lease ran out before it could
// be sent may be another replica's by then; it is left, not sent twice.
func TestExpiredLeaseNotSent(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	s := openSQLite(t, filepath.Join(t.TempDir(), "fota.db"), clock)
	defer s.Close()
	rc, srv := newReceiver(t, clock.Now, 0)
	w := addWebhook(t, s, srv.URL)
	addEvents(t, s, "late")
	deliver(t, New(Config{Store: stallingStore{s, clock}, Now: clock.Now}))
	if req, _ := rc.count(); req != 0 {
		t.Fatalf("%d requests sent after the lease ran out", req)
	}
	for _, dl := range byID(t, s, w.ID) {
		if dl.State != fota.DeliveryPending || dl.Attempts != 0 {
			t.Fatalf("delivery %+v", dl)
		}
	}
	deliver(t, New(Config{Store: s, Now: clock.Now}))
	rc.check(t, "late")
}
