package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/ecowatt/fota"
)

// TestFanOutWaitsForEarlierTransactions: an event takes its id when it is
// inserted and becomes visible when its transaction commits, so a later
// event can be seen first. Fan-out must not step over the earlier one: it
// waits until the earlier transaction has ended, then delivers both.
func TestFanOutWaitsForEarlierTransactions(t *testing.T) {
	s := freshStore(t)
	defer s.Close()
	ctx := context.Background()
	w := &fota.Webhook{URL: "https://example.com/hook", Events: []string{"*"}, Secret: "0123456789abcdef0123"}
	if err := s.CreateWebhook(ctx, w); err != nil {
		t.Fatal(err)
	}
	slow, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(ctx)
	early := &fota.Event{Time: time.Now(), Kind: fota.EventFailed, DeviceID: "early"}
	if err := addEvent(ctx, slow, early); err != nil {
		t.Fatal(err)
	}
	late := &fota.Event{Kind: fota.EventFailed, DeviceID: "late"}
	if err := s.AddEvent(ctx, late); err != nil {
		t.Fatal(err)
	}
	if late.ID <= early.ID {
		t.Fatalf("event ids %d then %d: the test needs the committed one numbered later", early.ID, late.ID)
	}
	made, _, err := s.FanOut(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if made != 0 {
		t.Fatalf("fanned out %d event(s) while an earlier-numbered one was uncommitted; the cursor would step over it", made)
	}
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	total := 0
	for deadline := time.Now().Add(10 * time.Second); total < 2; {
		made, _, err := s.FanOut(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		total += made
		if time.Now().After(deadline) {
			t.Fatalf("fanned out %d of 2 events in 10 s", total)
		}
	}
	ds, err := s.Deliveries(ctx, w.ID, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].EventID != late.ID || ds[1].EventID != early.ID {
		t.Fatalf("deliveries %+v, want of events %d and %d", ds, late.ID, early.ID)
	}
}
