package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/storetest"
)

// Repeated queries, in and out of transactions, prepare their statement
// once; a query that cannot be prepared reports SQLite's error; past the
// cache's bound, queries still run.
func TestStatementCache(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "fota.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateDevice(ctx, storetest.NewDevice("d1")); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := s.Device(ctx, "d1"); err != nil {
			t.Fatal(err)
		}
		if err := s.UseNonce(ctx, "d1", fmt.Sprintf("nonce-%04d-0123456789", i), s.now().Add(60e9)); err != nil {
			t.Fatal(err)
		}
	}
	deviceQuery := `SELECT ` + deviceColumns + ` FROM devices WHERE id = ?`
	if s.db.stmts[deviceQuery] == nil {
		t.Fatal("the device read is not prepared once and kept")
	}
	if n := len(s.db.stmts) + len(s.fast.stmts); n > 10 {
		t.Fatalf("%d statements kept after 50 device reads and nonces; each query should be prepared once", n)
	}
	if _, err := s.db.ExecContext(ctx, `SELEC nonsense`); err == nil || !strings.Contains(err.Error(), "syntax error") {
		t.Fatalf("a malformed query: %v, want SQLite's syntax error", err)
	}
	for i := range maxStmts + 10 {
		var n int
		if err := s.db.QueryRowContext(ctx, fmt.Sprintf("SELECT %d", i)).Scan(&n); err != nil || n != i {
			t.Fatalf("query %d past the bound: %d, %v", i, n, err)
		}
	}
	if len(s.db.stmts) > maxStmts {
		t.Fatalf("%d statements kept, bound is %d", len(s.db.stmts), maxStmts)
	}
}

// Many transactions at once on a fresh store, each running queries the
// cache does not hold yet, with more of them than connections: none may
// wait for a connection another waits to give back.
func TestStatementCacheUnderConcurrentTransactions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "fota.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rel := storetest.NewRelease("esp32", "1.0.4")
	if err := s.CreateRelease(ctx, rel); err != nil {
		t.Fatal(err)
	}
	const n = 8 * maxConns
	for i := range n {
		if err := s.CreateDevice(ctx, storetest.NewDevice(fmt.Sprintf("d%03d", i))); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("d%03d", i)
			sess := &fota.Session{ID: fmt.Sprintf("s%03d", i), DeviceID: id, ReleaseID: rel.ID, ReleaseVersion: rel.Version,
				API: fota.APINative, TotalChunks: 3}
			err := s.OpenSession(ctx, sess, fota.SessionCaps{})
			if err == nil {
				err = s.RecordProgress(ctx, []fota.Progress{{SessionID: sess.ID, Next: 3, Bytes: 3072}})
			}
			if err == nil {
				err = s.SetSessionState(ctx, sess.ID, fota.StateChange{State: fota.SessionConfirmed, RecordVersion: true, RecordCounter: true})
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent sessions: %v (transactions stuck waiting for connections end in a timeout or SQLITE_BUSY)", err)
		}
	}
}
