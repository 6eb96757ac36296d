package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ecowatt/fota"
)

// When a snapshot expires under a busy device, its concurrent requests
// share one store read; a failed read is not cached.
func TestSnapshotMissesShareOneRead(t *testing.T) {
	s := &Server{hot: newHotCache(DefaultSessionCacheTTL)}
	var reads atomic.Int32
	release := make(chan struct{})
	read := func(ctx context.Context, id string) (*fota.Session, error) {
		reads.Add(1)
		<-release
		return &fota.Session{ID: id}, nil
	}
	const waiters = 32
	var started, done sync.WaitGroup
	started.Add(waiters)
	done.Add(waiters)
	for range waiters {
		go func() {
			defer done.Done()
			started.Done()
			sess, err := s.snapshot(context.Background(), s.hot.byID, "id:s1", "s1", read)
			if err != nil || sess.ID != "s1" {
				t.Errorf("snapshot: %v, %v", sess, err)
			}
		}()
	}
	started.Wait()
	for { // let every goroutine find the read in flight
		s.hot.mu.Lock()
		inFlight := s.hot.loading["id:s1"] != nil
		s.hot.mu.Unlock()
		if inFlight {
			break
		}
	}
	close(release)
	done.Wait()
	// The first goroutines may finish before the last ones start, and those
	// then find the snapshot fresh: reads stay 1 either way.
	if n := reads.Load(); n != 1 {
		t.Fatalf("%d store reads for %d concurrent misses, want 1", n, waiters)
	}

	failing := func(ctx context.Context, id string) (*fota.Session, error) {
		reads.Add(1)
		return nil, errors.New("database down")
	}
	for range 2 {
		if _, err := s.snapshot(context.Background(), s.hot.byID, "id:s2", "s2", failing); err == nil {
			t.Fatal("a failed read returned no error")
		}
	}
	if n := reads.Load(); n != 3 {
		t.Fatalf("failed reads were cached: %d reads, want 3", n)
	}
}
