// Package sqlite implements fota.Store on embedded SQLite (pure Go, no cgo):
// WAL journal, foreign keys on, full fsync on commit, numbered embedded
// migrations applied one transaction each.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/listcache"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a fota.Store on one SQLite database file.
type Store struct {
	db *pool
	// fast writes what devices do: request nonces, last-seen times, sessions
	// and their states and events, download progress. It commits without
	// waiting for fsync (synchronous=NORMAL in WAL mode): nothing is lost to
	// a process crash, and an operating-system crash or power loss can lose
	// the last moments of it, which devices redo (they check again, resume
	// from their own progress, and report the version they run). That is
	// what lets the server take thousands of device requests a second. What
	// operators do (releases, devices, tokens, pins) goes through db, which
	// fsyncs every commit: it is never lost.
	fast *pool
	// walPath is the write-ahead log, which syncWAL fsyncs to make commits
	// on fast durable.
	walPath string
	walMu   sync.Mutex
	wal     *os.File
	now     func() time.Time
	// lastSweep is when OpenSession last abandoned idle sessions (Unix ms).
	lastSweep atomic.Int64
	// lists are rollouts' decoded lists, which every check-in reads.
	lists listcache.Cache
	// nonces, seen and opens group-commit request nonces, last-seen times
	// and session opens (batch.go).
	nonces *batcher[nonceWrite]
	seen   *batcher[seenWrite]
	opens  *batcher[openWrite]
	stop   chan struct{}
	// checkpointerDone is closed when the checkpointer has stopped.
	checkpointerDone chan struct{}
	closeOnce        sync.Once
	closeErr         error
}

var _ fota.Store = (*Store)(nil)

// Open opens (creating if needed, mode 0600) the database at file and
// brings its schema up to date. It refuses a database whose schema is newer
// than this fota knows: an older binary must not write to it.
func Open(ctx context.Context, file string) (*Store, error) {
	if f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("open database %s: %w", file, err)
	} else {
		f.Close()
	}
	// _txlock=immediate takes the write lock at BEGIN, so concurrent writers
	// wait on busy_timeout instead of failing when a read upgrades to a write.
	// Checkpoints run in the background (checkpointer); the automatic one,
	// which would otherwise stall whichever request commits past 1,000 pages
	// of WAL for a copy and an fsync, stays only as a backstop at 64 MiB.
	// Each connection caches 512 KiB of pages, not SQLite's 2 MiB: sixteen
	// connections' caches were a fifth of the server's memory with 10,000
	// devices updating (peak RSS 146-153 -> 135 MiB), and the operating
	// system caches the file anyway (check-in latency did not change).
	dsn := "file:" + file + "?_txlock=immediate" +
		"&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=busy_timeout(10000)" +
		"&_pragma=wal_autocheckpoint(16384)&_pragma=cache_size(-512)&_pragma=synchronous("
	db, err := sql.Open("sqlite", dsn+"FULL)")
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", file, err)
	}
	limitPool(db)
	writer := make(chan struct{}, 1)
	s := &Store{db: newPool(db, writer), now: time.Now, walPath: file + "-wal"}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("open database %s: %w", file, err)
	}
	fast, err := sql.Open("sqlite", dsn+"NORMAL)")
	if err != nil {
		s.db.Close()
		return nil, fmt.Errorf("open database %s: %w", file, err)
	}
	limitPool(fast)
	s.fast = newPool(fast, writer)
	s.stop = make(chan struct{})
	s.nonces = startBatcher(s.stop, s.writeNonces)
	s.seen = startBatcher(s.stop, s.writeSeen)
	s.opens = startBatcher(s.stop, s.writeOpens)
	s.checkpointerDone = make(chan struct{})
	go s.checkpointer()
	return s, nil
}

// checkpointEvery is how often the WAL is copied back into the database:
// often enough that each copy is small (every second left p99 at 4-20 ms
// in the run below).
const checkpointEvery = 200 * time.Millisecond

// checkpointer copies the WAL into the database every checkpointEvery, on
// its own goroutine: a passive checkpoint waits for no reader or writer,
// and no request waits for it. With SQLite's automatic checkpoint, the
// request whose commit crossed the threshold did that work and its fsync
// itself: 3,000 check-ins at 1,000/s, server on one core, had a p99 of
// 8-19 ms with it and 3.3-9.3 ms with this (twelve runs each). A checkpoint
// that fails (the disk, say) is tried again on the next tick, and the
// automatic one still bounds the WAL.
func (s *Store) checkpointer() {
	defer close(s.checkpointerDone)
	tick := time.NewTicker(checkpointEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			s.fast.Exec("PRAGMA wal_checkpoint(PASSIVE)")
		}
	}
}

// maxConns bounds each handle's connections. Without a bound, ten thousand
// devices waiting on the one SQLite writer each open a connection, with its
// own page cache and three file descriptors, until the server runs out of
// both; with it they queue for a connection. WAL readers still run
// concurrently, and writers take turns anyway.
const maxConns = 8

func limitPool(db *sql.DB) {
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
}

// syncWAL makes every commit on fast so far durable: fsync of the
// write-ahead log, which NORMAL commits write but do not sync. It runs
// after the commit, outside SQLite's write lock, so a durable write on the
// device path does not hold every other writer back for an fsync (an fsync
// inside the lock, through the FULL pool, put check-in p99 near a second
// at 1,000 a second). Frames a checkpoint already moved into the database
// were synced by the checkpoint.
func (s *Store) syncWAL() error {
	s.walMu.Lock()
	defer s.walMu.Unlock()
	if s.wal == nil {
		f, err := os.OpenFile(s.walPath, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("open write-ahead log to sync it: %w", err)
		}
		s.wal = f
	}
	if err := s.wal.Sync(); err != nil {
		return fmt.Errorf("sync write-ahead log: %w", err)
	}
	return nil
}

// PoolStats reports the connections of both handles, for /metrics.
func (s *Store) PoolStats() (open, inUse, idle int) {
	a, b := s.db.Stats(), s.fast.Stats()
	return a.OpenConnections + b.OpenConnections, a.InUse + b.InUse, a.Idle + b.Idle
}

// SetClock replaces the clock, for tests.
func (s *Store) SetClock(now func() time.Time) { s.now = now }

// Close stops the nonce writer and the checkpointer and closes the database. Nothing may use the
// store after Close.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.nonces.done
		<-s.seen.done
		<-s.opens.done
		<-s.checkpointerDone
		s.closeErr = errors.Join(s.fast.Close(), s.db.Close())
		s.walMu.Lock()
		if s.wal != nil {
			s.wal.Close()
		}
		s.walMu.Unlock()
	})
	return s.closeErr
}

// SchemaVersion is the highest migration this binary has.
func SchemaVersion() int {
	names, _ := fs.Glob(migrations, "migrations/*.sql")
	return len(names)
}

func (s *Store) migrate(ctx context.Context) error {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	var current int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current > len(names) {
		return fota.Errorf(fota.EINVALID, "database schema version %d is newer than this fota knows (%d); run a newer fota", current, len(names))
	}
	for i, name := range names {
		n, err := strconv.Atoi(strings.SplitN(path.Base(name), "_", 2)[0])
		if err != nil || n != i+1 {
			return fmt.Errorf("migration %s is out of sequence", name)
		}
		if n <= current {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		err = s.tx(ctx, func(tx *txn) error {
			// Not through the statement cache: each runs once.
			if _, err := tx.Tx.ExecContext(ctx, string(body)); err != nil {
				return fmt.Errorf("apply %s: %w", name, err)
			}
			// PRAGMA takes no parameters; n is a number we parsed.
			_, err := tx.Tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", n))
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) tx(ctx context.Context, fn func(tx *txn) error) error {
	return inTx(ctx, s.db, fn)
}

func inTx(ctx context.Context, db *pool, fn func(tx *txn) error) error {
	if err := db.lockWrites(ctx); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer db.unlockWrites()
	sqlTx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	tx := &txn{Tx: sqlTx, pool: db}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// rowScanner is what *sql.Row and *sql.Rows share.
type rowScanner interface{ Scan(...any) error }

// queryAll runs a query and scans every row with scan; what names the
// list in errors.
func queryAll[T any](ctx context.Context, db interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, what string, scan func(rowScanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", what, err)
	}
	return out, nil
}

// one finishes a single-row read: no row is the caller's not-found error,
// any other error gets what was being read as context.
func one[T any](v T, err error, notFound *fota.Error, what string) (T, error) {
	var zero T
	if errors.Is(err, sql.ErrNoRows) {
		return zero, notFound
	}
	if err != nil {
		return zero, fmt.Errorf("read %s: %w", what, err)
	}
	return v, nil
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

func isUnique(err error) bool {
	var e *sqlite.Error
	if errors.As(err, &e) {
		// SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY
		return e.Code() == 2067 || e.Code() == 1555
	}
	return false
}

func addEvent(ctx context.Context, tx *txn, e *fota.Event) error {
	if e.Actor == "" {
		e.Actor = fota.ActorFrom(ctx)
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO events (time_ms, kind, device_id, release_version, session_id, detail, actor, rollout_id, api)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, ms(e.Time), e.Kind, e.DeviceID, e.ReleaseVersion, e.SessionID, e.Detail, e.Actor, e.RolloutID, e.API)
	if err != nil {
		return fmt.Errorf("add event: %w", err)
	}
	e.ID, _ = res.LastInsertId()
	return nil
}

// AddEvent records an event.
func (s *Store) AddEvent(ctx context.Context, e *fota.Event) error {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	return s.tx(ctx, func(tx *txn) error { return addEvent(ctx, tx, e) })
}

// Events lists events, newest first.
func (s *Store) Events(ctx context.Context, f fota.EventFilter) ([]*fota.Event, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	// Each filter is a fixed fragment, so the queries are a bounded set
	// (at most 64; the statement cache keeps those in use). The actor and
	// rollout terms repeat the partial indexes' conditions, which SQLite
	// cannot infer from a parameter.
	var where []string
	var args []any
	add := func(cond string, arg any) { where = append(where, cond); args = append(args, arg) }
	if f.DeviceID != "" {
		add(`device_id = ?`, f.DeviceID)
	}
	if f.Kind != "" {
		add(`kind = ?`, f.Kind)
	}
	if f.RolloutID != 0 {
		add(`rollout_id = ? AND rollout_id <> 0`, f.RolloutID)
	}
	if f.Actor != "" {
		add(`actor = ? AND actor <> ''`, f.Actor)
	}
	if f.AfterID > 0 {
		add(`id > ?`, f.AfterID)
	}
	if f.BeforeID > 0 {
		add(`id < ?`, f.BeforeID)
	}
	q := `SELECT id, time_ms, kind, device_id, release_version, session_id, detail, actor, rollout_id, api FROM events`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	return queryAll(ctx, s.db, "events", scanEvent, q+` ORDER BY id DESC LIMIT ?`, append(args, limit)...)
}
