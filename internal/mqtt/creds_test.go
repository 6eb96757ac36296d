package mqtt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/protocol"
)

func TestCredCacheSharesAndExpires(t *testing.T) {
	f := newFleet("dev-1")
	c := newCredCache(f.Device, 100)
	now := time.Unix(1_000_000, 0)
	var mu sync.Mutex
	c.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }

	// 10,000 connections of one device at once: one store lookup. Every
	// caller either shares the lookup under way or finds it cached.
	var wg sync.WaitGroup
	var wrong atomic.Int64
	for range 10_000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pw, err := c.password(context.Background(), "dev-1")
			if err != nil || pw != string(password("dev-1")) {
				wrong.Add(1)
			}
		}()
	}
	wg.Wait()
	if wrong.Load() != 0 || f.calls.Load() != 1 {
		t.Fatalf("%d wrong answers, %d store calls; want 0 and 1", wrong.Load(), f.calls.Load())
	}

	// Removed: still cached until credTTL passes, then refused.
	f.mu.Lock()
	f.devices["dev-1"].Removed = now
	f.mu.Unlock()
	mu.Lock()
	now = now.Add(credTTL - time.Second)
	mu.Unlock()
	if pw, _ := c.password(context.Background(), "dev-1"); pw == "" {
		t.Fatal("entry expired early")
	}
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	if pw, err := c.password(context.Background(), "dev-1"); pw != "" || err != nil {
		t.Fatalf("removed device after credTTL: %q %v, want no password", pw, err)
	}
	if f.calls.Load() != 2 {
		t.Fatalf("%d store calls, want 2", f.calls.Load())
	}
}

func TestCredCacheStoreErrorsNotCached(t *testing.T) {
	var calls atomic.Int64
	boom := errors.New("database is locked")
	c := newCredCache(func(context.Context, string) (*fota.Device, error) {
		calls.Add(1)
		return nil, boom
	}, 100)
	for range 3 {
		if _, err := c.password(context.Background(), "dev-1"); !errors.Is(err, boom) {
			t.Fatalf("store failure: %v", err)
		}
	}
	if calls.Load() != 3 || c.len() != 0 {
		t.Fatalf("%d calls, %d cached: a failure must not be cached", calls.Load(), c.len())
	}
}

func TestCredCacheBounded(t *testing.T) {
	f := newFleet()
	for i := range 1000 {
		id := fmt.Sprintf("dev-%d", i)
		f.devices[id] = &fota.Device{ID: id, PSK: testPSK(id)}
	}
	c := newCredCache(f.Device, 64)
	for i := range 1000 {
		id := fmt.Sprintf("dev-%d", i)
		pw, err := c.password(context.Background(), id)
		if err != nil || pw != protocol.MQTTPassword(testPSK(id), id) {
			t.Fatalf("%s: %q %v", id, pw, err)
		}
		if c.len() > 64 {
			t.Fatalf("cache holds %d entries, bound 64", c.len())
		}
	}
}

func TestCredCacheBoundsConcurrentLookups(t *testing.T) {
	var cur, peak atomic.Int64
	release := make(chan struct{})
	c := newCredCache(func(ctx context.Context, id string) (*fota.Device, error) {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		cur.Add(-1)
		return &fota.Device{ID: id, PSK: testPSK(id)}, nil
	}, 1000)
	var wg sync.WaitGroup
	for i := range 4 * lookupConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.password(context.Background(), fmt.Sprintf("dev-%d", i)); err != nil {
				t.Error(err)
			}
		}()
	}
	waitFor(t, "the store's lookups to fill up", func() bool { return cur.Load() == lookupConcurrency })
	close(release)
	wg.Wait()
	if peak.Load() != lookupConcurrency {
		t.Fatalf("peak of %d concurrent store lookups, want %d", peak.Load(), lookupConcurrency)
	}
}
