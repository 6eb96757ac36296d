package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
)

// webhookSecret is the secret of the webhooks below; no list or event may
// ever show it.
const webhookSecret = "s3cret-s3cret-s3cret-0123456789"

func newWebhook(t *testing.T, s fota.Store, events ...string) *fota.Webhook {
	t.Helper()
	w := &fota.Webhook{URL: "https://hooks.example.com/fota/p4th-t0ken", Events: events, Secret: webhookSecret}
	must(t, s.CreateWebhook(context.Background(), w))
	return w
}

// fanOutAll runs FanOut until it has made want deliveries and says there
// is no more to read, and reports whether any call said there was more.
// It polls: on PostgreSQL an event is fanned out only once every
// transaction older than its own has ended, which other tests'
// transactions on the same server can hold back for a moment.
func fanOutAll(t *testing.T, s fota.Store, batch, want int) (sawMore bool) {
	t.Helper()
	total := 0
	for deadline := time.Now().Add(10 * time.Second); ; {
		made, more, err := s.FanOut(context.Background(), batch)
		must(t, err)
		total += made
		sawMore = sawMore || more
		switch {
		case total > want:
			t.Fatalf("fan-out made %d deliveries, want %d", total, want)
		case total == want && !more:
			return sawMore
		case time.Now().After(deadline):
			t.Fatalf("fan-out made %d deliveries in 10 s, want %d", total, want)
		}
	}
}

func deliveries(t *testing.T, s fota.Store, webhookID int64) []*fota.Delivery {
	t.Helper()
	ds, err := s.Deliveries(context.Background(), webhookID, 10000)
	must(t, err)
	return ds
}

func testWebhooks(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		w    fota.Webhook
		want string
	}{
		{"ftp URL", fota.Webhook{URL: "ftp://example.com/x", Events: []string{"*"}, Secret: webhookSecret}, "http:// or https://"},
		{"no host", fota.Webhook{URL: "https:///x", Events: []string{"*"}, Secret: webhookSecret}, "no host"},
		{"credentials in URL", fota.Webhook{URL: "https://user:pw@example.com/", Events: []string{"*"}, Secret: webhookSecret}, "user name or password"},
		{"short secret", fota.Webhook{URL: "https://example.com/", Events: []string{"*"}, Secret: "short"}, "at least 16"},
		{"no events", fota.Webhook{URL: "https://example.com/", Events: []string{" , "}, Secret: webhookSecret}, "at least one event pattern"},
		{"misspelt event", fota.Webhook{URL: "https://example.com/", Events: []string{"rollout.halt"}, Secret: webhookSecret}, "device.rolled_back"},
		{"kind, not name", fota.Webhook{URL: "https://example.com/", Events: []string{"rolled-back"}, Secret: webhookSecret}, "use event names"},
	} {
		err := s.CreateWebhook(ctx, &tc.w)
		wantCode(t, err, fota.EINVALID)
		if msg := fota.ErrorMessage(err); !strings.Contains(msg, tc.want) || strings.Contains(msg, webhookSecret) {
			t.Fatalf("%s: message %q, want one saying %q", tc.name, msg, tc.want)
		}
	}
	c.Advance(time.Minute)
	w := newWebhook(t, s, "rollout.*, device.rolled_back", "rollout.*")
	if w.ID == 0 || !w.Created.Equal(c.Now().UTC()) {
		t.Fatalf("CreateWebhook set ID %d, Created %v", w.ID, w.Created)
	}
	w2 := newWebhook(t, s, "*")
	list, err := s.Webhooks(ctx)
	must(t, err)
	if len(list) != 2 || list[0].ID != w.ID || list[1].ID != w2.ID {
		t.Fatalf("webhooks %+v", list)
	}
	got := list[0]
	if got.URL != w.URL || fmt.Sprint(got.Events) != "[rollout.* device.rolled_back]" || !got.Created.Equal(w.Created.Truncate(time.Millisecond)) {
		t.Fatalf("read back %+v", got)
	}
	if got.Secret != "" {
		t.Fatal("Webhooks read back a secret")
	}
	evs, _ := s.Events(ctx, fota.EventFilter{Limit: 2})
	if evs[1].Kind != fota.EventWebhookCreated || !strings.Contains(evs[1].Detail, "hooks.example.com") {
		t.Fatalf("event of the creation: %+v", evs[1])
	}
	for _, e := range evs {
		// The path may be the receiver's credential; the secret is ours.
		if strings.Contains(e.Detail, "p4th-t0ken") || strings.Contains(e.Detail, webhookSecret) {
			t.Fatalf("event shows the URL's path or the secret: %q", e.Detail)
		}
	}

	must(t, s.RemoveWebhook(ctx, w.ID))
	wantCode(t, s.RemoveWebhook(ctx, w.ID), fota.ENOTFOUND)
	_, err = s.Deliveries(ctx, w.ID, 10)
	wantCode(t, err, fota.ENOTFOUND)
	if list, _ := s.Webhooks(ctx); len(list) != 1 || list[0].ID != w2.ID {
		t.Fatalf("webhooks after a removal: %+v", list)
	}
	if evs, _ := s.Events(ctx, fota.EventFilter{Limit: 1}); evs[0].Kind != fota.EventWebhookRemoved {
		t.Fatalf("newest event %+v, want %s", evs[0], fota.EventWebhookRemoved)
	}
	// Ids are not given again.
	if w3 := newWebhook(t, s, "*"); w3.ID <= w2.ID {
		t.Fatalf("a new webhook got id %d after %d", w3.ID, w2.ID)
	}
}

func testWebhookFanOut(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	add := func(e *fota.Event) *fota.Event {
		t.Helper()
		c.Advance(time.Second)
		must(t, s.AddEvent(ctx, e))
		return e
	}
	// Events from before the webhook never reach it.
	add(&fota.Event{Kind: fota.EventRolledBack, DeviceID: "before"})
	w := newWebhook(t, s, "rollout.*", "device.rolled_back")
	other := newWebhook(t, s, "release.*")
	rb := add(&fota.Event{Kind: fota.EventRolledBack, DeviceID: "d1", ReleaseVersion: "1.0.4", SessionID: "s1", Detail: "self-test failed"})
	add(&fota.Event{Kind: fota.EventConfirmed, DeviceID: "d2"})
	halted := add(&fota.Event{Kind: fota.EventRolloutHalted, Detail: "gate failed", Actor: "token:ci"})
	add(&fota.Event{Kind: fota.EventProgress, DeviceID: "d2"})
	add(&fota.Event{Kind: "some-future-kind"})
	// Batches of 2 over the 7 events after the webhook's cursor (its
	// creation and the other's among them) come back for more.
	if !fanOutAll(t, s, 2, 2) {
		t.Fatal("batches of 2 over 7 events never said there was more")
	}
	if ds := deliveries(t, s, other.ID); len(ds) != 0 {
		t.Fatalf("release.* got %d deliveries of device and rollout events", len(ds))
	}

	ds := deliveries(t, s, w.ID)
	if len(ds) != 2 || ds[0].EventID != halted.ID || ds[1].EventID != rb.ID {
		t.Fatalf("deliveries %+v, want of events %d and %d", ds, halted.ID, rb.ID)
	}
	for i, want := range []struct {
		e    *fota.Event
		name string
	}{{halted, "rollout.halted"}, {rb, "device.rolled_back"}} {
		d := ds[i]
		if len(d.ID) != 32 || d.WebhookID != w.ID || d.Event != want.name || d.State != fota.DeliveryPending || d.Attempts != 0 ||
			!d.Created.Equal(c.Now().Truncate(time.Millisecond)) || !d.NextAttempt.Equal(d.Created) {
			t.Fatalf("delivery %+v", d)
		}
		var p protocol.WebhookEvent
		if err := json.Unmarshal(d.Payload, &p); err != nil {
			t.Fatalf("payload %s: %v", d.Payload, err)
		}
		e := want.e
		if p.ID != d.ID || p.Event != want.name || !p.Time.Equal(e.Time.Truncate(time.Millisecond)) || p.DeviceID != e.DeviceID ||
			p.ReleaseVersion != e.ReleaseVersion || p.SessionID != e.SessionID || p.Detail != e.Detail || p.Actor != e.Actor {
			t.Fatalf("payload %s of event %+v", d.Payload, e)
		}
	}
	if ds[0].ID == ds[1].ID {
		t.Fatal("two deliveries share an id")
	}
	// Nothing new: nothing more, however often it runs.
	fanOutAll(t, s, 10, 0)
	later := add(&fota.Event{Kind: fota.EventRolloutWaveOpened})
	fanOutAll(t, s, 10, 1)
	if ds := deliveries(t, s, w.ID); len(ds) != 3 || ds[0].EventID != later.ID || ds[0].Event != "rollout.wave_opened" {
		t.Fatalf("after a later event: %+v", ds[0])
	}
}

// testWebhookFanOutConcurrent: two fan-outs at once (two replicas) while
// events are being recorded make each event's delivery once.
func testWebhookFanOutConcurrent(t *testing.T, s fota.Store, _ *Clock) {
	ctx := context.Background()
	hooks := []*fota.Webhook{newWebhook(t, s, "*"), newWebhook(t, s, "device.*")}
	const events = 60
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Add(3)
	go func() {
		defer wg.Done()
		for i := range events {
			if err := s.AddEvent(ctx, &fota.Event{Kind: fota.EventFailed, DeviceID: "d", Detail: fmt.Sprint(i)}); err != nil {
				errs <- err
				return
			}
		}
	}()
	for range 2 {
		go func() {
			defer wg.Done()
			for range 40 {
				if _, _, err := s.FanOut(ctx, 7); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var made int
	for _, w := range hooks {
		made += len(deliveries(t, s, w.ID))
	}
	fanOutAll(t, s, 7, 2*events-made)
	for _, w := range hooks {
		seen := map[string]bool{}
		for _, d := range deliveries(t, s, w.ID) {
			var p protocol.WebhookEvent
			must(t, json.Unmarshal(d.Payload, &p))
			if seen[p.Detail] {
				t.Fatalf("webhook %d got event %s twice", w.ID, p.Detail)
			}
			seen[p.Detail] = true
		}
		if len(seen) != events {
			t.Fatalf("webhook %d got %d of %d events", w.ID, len(seen), events)
		}
	}
}

func testWebhookClaims(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	w := newWebhook(t, s, "device.failed")
	for i := range 5 {
		c.Advance(time.Second)
		must(t, s.AddEvent(ctx, &fota.Event{Kind: fota.EventFailed, DeviceID: fmt.Sprint("d", i)}))
	}
	fanOutAll(t, s, 100, 5)
	if list, _ := s.Webhooks(ctx); list[0].Pending != 5 || list[0].Failed != 0 {
		t.Fatalf("counts %d pending, %d failed; want 5, 0", list[0].Pending, list[0].Failed)
	}
	now := c.Now()
	first, err := s.ClaimDeliveries(ctx, now, time.Minute, 3)
	must(t, err)
	if len(first) != 3 {
		t.Fatalf("claimed %d, want 3", len(first))
	}
	for _, d := range first {
		if d.URL != w.URL || string(d.Secret) != webhookSecret || !d.LeaseUntil.Equal(now.Add(time.Minute).Truncate(time.Millisecond)) || len(d.Payload) == 0 {
			t.Fatalf("claimed %+v (url %q)", d, d.URL)
		}
	}
	rest, err := s.ClaimDeliveries(ctx, now, time.Minute, 3)
	must(t, err)
	if len(rest) != 2 {
		t.Fatalf("second claim got %d, want the 2 not leased", len(rest))
	}
	if none, _ := s.ClaimDeliveries(ctx, now.Add(59*time.Second), time.Minute, 10); len(none) != 0 {
		t.Fatalf("claimed %d deliveries under lease", len(none))
	}

	// One delivered, one to retry in 10 s, one failed, two left leased.
	c.Advance(time.Second)
	at := c.Now()
	must(t, s.RecordAttempt(ctx, first[0].ID, fota.DeliveryAttempt{State: fota.DeliveryDelivered, Status: 204, At: at}))
	must(t, s.RecordAttempt(ctx, first[1].ID, fota.DeliveryAttempt{State: fota.DeliveryPending, NextAttempt: at.Add(10 * time.Second),
		Status: 500, Error: "HTTP 500: oops", At: at}))
	must(t, s.RecordAttempt(ctx, first[2].ID, fota.DeliveryAttempt{State: fota.DeliveryFailed, Error: "connection refused", At: at}))
	wantCode(t, s.RecordAttempt(ctx, first[0].ID, fota.DeliveryAttempt{State: fota.DeliveryFailed, At: at}), fota.ECONFLICT)
	wantCode(t, s.RecordAttempt(ctx, "0123456789abcdef0123456789abcdef", fota.DeliveryAttempt{State: fota.DeliveryFailed, At: at}), fota.ENOTFOUND)
	wantCode(t, s.RecordAttempt(ctx, rest[0].ID, fota.DeliveryAttempt{State: "lost", At: at}), fota.EINVALID)

	byID := map[string]*fota.Delivery{}
	for _, d := range deliveries(t, s, w.ID) {
		byID[d.ID] = d
	}
	at = at.Truncate(time.Millisecond)
	if d := byID[first[0].ID]; d.State != fota.DeliveryDelivered || d.Attempts != 1 || d.LastStatus != 204 || !d.Delivered.Equal(at) ||
		!d.LeaseUntil.IsZero() || !d.NextAttempt.IsZero() {
		t.Fatalf("delivered: %+v", d)
	}
	if d := byID[first[1].ID]; d.State != fota.DeliveryPending || d.Attempts != 1 || d.LastStatus != 500 || d.LastError != "HTTP 500: oops" ||
		!d.NextAttempt.Equal(at.Add(10*time.Second)) || !d.LastAttempt.Equal(at) || !d.Delivered.IsZero() {
		t.Fatalf("to retry: %+v", d)
	}
	if d := byID[first[2].ID]; d.State != fota.DeliveryFailed || d.LastError != "connection refused" || d.LastStatus != 0 {
		t.Fatalf("failed: %+v", d)
	}
	if list, _ := s.Webhooks(ctx); list[0].Pending != 3 || list[0].Failed != 1 {
		t.Fatalf("counts %d pending, %d failed; want 3, 1", list[0].Pending, list[0].Failed)
	}
	// The retry is due at its time, its lease over; the two whose claimer
	// vanished come back once their lease ran out; the ended never do.
	due, err := s.ClaimDeliveries(ctx, at.Add(9*time.Second), time.Minute, 10)
	must(t, err)
	if len(due) != 0 {
		t.Fatalf("claimed %d before the retry was due and the leases ran out", len(due))
	}
	due, err = s.ClaimDeliveries(ctx, at.Add(10*time.Second), time.Minute, 10)
	must(t, err)
	if len(due) != 1 || due[0].ID != first[1].ID || due[0].Attempts != 1 {
		t.Fatalf("claimed %+v, want the retry", due)
	}
	due, err = s.ClaimDeliveries(ctx, now.Add(time.Minute), time.Minute, 10)
	must(t, err)
	if len(due) != 2 || due[0].ID == first[1].ID || due[1].ID == first[1].ID {
		t.Fatalf("after the leases ran out claimed %d, want the 2 left leased", len(due))
	}

	// Removing the webhook takes its deliveries, pending ones too.
	must(t, s.RemoveWebhook(ctx, w.ID))
	if due, _ := s.ClaimDeliveries(ctx, now.Add(time.Hour), time.Minute, 10); len(due) != 0 {
		t.Fatalf("claimed %d deliveries of a removed webhook", len(due))
	}
	wantCode(t, s.RecordAttempt(ctx, rest[0].ID, fota.DeliveryAttempt{State: fota.DeliveryDelivered, At: at}), fota.ENOTFOUND)
}

// testWebhookClaimsConcurrent: two claimers at once (two replicas) never
// both get one delivery.
func testWebhookClaimsConcurrent(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	newWebhook(t, s, "*")
	const n = 40
	for i := range n {
		must(t, s.AddEvent(ctx, &fota.Event{Kind: fota.EventFailed, DeviceID: "d", Detail: fmt.Sprint(i)}))
	}
	fanOutAll(t, s, 100, n)
	now := c.Now()
	var mu sync.Mutex
	claimed := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Bounded: a store that leased nothing would hand out the
			// same deliveries for ever.
			for range n {
				ds, err := s.ClaimDeliveries(ctx, now, time.Minute, 3)
				if err != nil {
					errs <- err
					return
				}
				if len(ds) == 0 {
					return
				}
				mu.Lock()
				for _, d := range ds {
					claimed[d.ID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for id, k := range claimed {
		if k != 1 {
			t.Fatalf("delivery %s claimed %d times", id, k)
		}
	}
	if len(claimed) != n {
		t.Fatalf("claimed %d of %d deliveries", len(claimed), n)
	}
	if again, _ := s.ClaimDeliveries(ctx, now, time.Minute, n); len(again) != 0 {
		t.Fatalf("claimed %d leased deliveries", len(again))
	}
}

func testPruneDeliveries(t *testing.T, s fota.Store, c *Clock) {
	ctx := context.Background()
	w := newWebhook(t, s, "*")
	for i := range 4 {
		must(t, s.AddEvent(ctx, &fota.Event{Kind: fota.EventFailed, DeviceID: "d", Detail: fmt.Sprint(i)}))
	}
	fanOutAll(t, s, 100, 4)
	ds, err := s.ClaimDeliveries(ctx, c.Now(), time.Minute, 3)
	must(t, err)
	must(t, s.RecordAttempt(ctx, ds[0].ID, fota.DeliveryAttempt{State: fota.DeliveryDelivered, Status: 200, At: c.Now()}))
	must(t, s.RecordAttempt(ctx, ds[1].ID, fota.DeliveryAttempt{State: fota.DeliveryFailed, At: c.Now()}))
	must(t, s.RecordAttempt(ctx, ds[2].ID, fota.DeliveryAttempt{State: fota.DeliveryPending, NextAttempt: c.Now().Add(time.Hour), At: c.Now()}))
	c.Advance(time.Hour)
	// Made later: not yet old enough.
	must(t, s.AddEvent(ctx, &fota.Event{Kind: fota.EventFailed, DeviceID: "d", Detail: "late"}))
	fanOutAll(t, s, 100, 1)
	late := deliveries(t, s, w.ID)[0]
	must(t, s.RecordAttempt(ctx, late.ID, fota.DeliveryAttempt{State: fota.DeliveryDelivered, Status: 200, At: c.Now()}))

	before := c.Now().Add(-time.Minute)
	n, err := s.PruneDeliveries(ctx, before, 1)
	must(t, err)
	if n != 1 {
		t.Fatalf("pruned %d, want the batch of 1", n)
	}
	n, _ = s.PruneDeliveries(ctx, before, 10)
	if n != 1 {
		t.Fatalf("second batch pruned %d, want 1", n)
	}
	left := map[string]bool{}
	for _, d := range deliveries(t, s, w.ID) {
		left[d.ID] = true
	}
	if len(left) != 3 || !left[ds[2].ID] || !left[late.ID] || left[ds[0].ID] || left[ds[1].ID] {
		t.Fatalf("left %v; want the two pending and the late one", left)
	}
}
