// Package postgres implements fota.Store on PostgreSQL (pgx), for fleets
// that outgrow one machine: several stateless `fota serve` replicas share
// one database. Migrations are numbered embedded SQL files, applied one
// transaction each under an advisory lock, so replicas starting together do
// not race; a replica refuses a database whose schema is newer than it knows.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ecowatt/fota"
	"github.com/ecowatt/fota/internal/listcache"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the advisory lock key replicas take while migrating.
const migrationLock = 0x666f7461 // "fota"

// Store is a fota.Store on a PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool
	// fast runs what devices cause (nonces, last seen, sessions, progress,
	// their events) with synchronous_commit off: a database crash can lose
	// the last moments of those, never corrupt them, and devices retry,
	// while the commit no longer waits for a WAL flush. Releases, devices
	// and tokens, the operator's writes, wait for the flush.
	fast *pgxpool.Pool
	now  func() time.Time
	// lastSweep is when OpenSession last abandoned idle sessions (Unix ms).
	lastSweep atomic.Int64
	// lists are rollouts' decoded lists, which every check-in reads.
	lists listcache.Cache
}

// defaultMaxConns is each pool's size unless the DSN sets pool_max_conns:
// pgx's default (the CPU count, at least 4) queues check-ins behind each
// other on a small machine while the database has capacity to spare.
const defaultMaxConns = 16

var _ fota.Store = (*Store)(nil)

// Open connects to dsn and brings the schema up to date. The pool's size
// and timeouts come from the DSN (pool_max_conns, pool_max_conn_lifetime, …).
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: bad DSN: %w", err)
	}
	return OpenConfig(ctx, cfg)
}

// OpenConfig is Open with a parsed pool configuration.
func OpenConfig(ctx context.Context, cfg *pgxpool.Config) (*Store, error) {
	if !strings.Contains(cfg.ConnString(), "pool_max_conns") {
		cfg.MaxConns = defaultMaxConns
	}
	fastCfg := cfg.Copy()
	fastCfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	fast, err := pgxpool.NewWithConfig(ctx, fastCfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	s := &Store{pool: pool, fast: fast, now: time.Now}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// SetClock replaces the clock, for tests.
func (s *Store) SetClock(now func() time.Time) { s.now = now }

// Pool exposes the connection pool, for metrics.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// PoolStats reports both pools' connections, for /metrics.
func (s *Store) PoolStats() (open, inUse, idle int) {
	for _, p := range []*pgxpool.Pool{s.pool, s.fast} {
		st := p.Stat()
		open += int(st.TotalConns())
		inUse += int(st.AcquiredConns())
		idle += int(st.IdleConns())
	}
	return open, inUse, idle
}

// Close closes the pools.
func (s *Store) Close() error { s.pool.Close(); s.fast.Close(); return nil }

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
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		return fmt.Errorf("postgres: migration lock: %w", err)
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, migrationLock)
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	var current int
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("postgres: read schema version: %w", err)
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
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return fmt.Errorf("apply %s: %w", name, err)
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)`, n, time.Now().UnixMilli())
			return err
		})
		if err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
	}
	return nil
}

func (s *Store) tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// fastTx is tx on the fast pool, for writes devices cause.
func (s *Store) fastTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.fast, fn)
}

type rowScanner interface{ Scan(...any) error }

func queryAll[T any](ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, what string, scan func(rowScanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.Query(ctx, query, args...)
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

func one[T any](v T, err error, notFound *fota.Error, what string) (T, error) {
	var zero T
	if errors.Is(err, pgx.ErrNoRows) {
		return zero, notFound
	}
	if err != nil {
		return zero, fmt.Errorf("read %s: %w", what, err)
	}
	return v, nil
}

func isUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
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

func addEvent(ctx context.Context, tx pgx.Tx, e *fota.Event) error {
	if e.Actor == "" {
		e.Actor = fota.ActorFrom(ctx)
	}
	err := tx.QueryRow(ctx, `INSERT INTO events (time_ms, kind, device_id, release_version, session_id, detail, actor, rollout_id, api)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`,
		ms(e.Time), e.Kind, e.DeviceID, e.ReleaseVersion, e.SessionID, e.Detail, e.Actor, e.RolloutID, e.API).Scan(&e.ID)
	if err != nil {
		return fmt.Errorf("add event: %w", err)
	}
	return nil
}

// AddEvent records an event.
func (s *Store) AddEvent(ctx context.Context, e *fota.Event) error {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	return s.tx(ctx, func(tx pgx.Tx) error { return addEvent(ctx, tx, e) })
}

// Events lists events, newest first.
func (s *Store) Events(ctx context.Context, f fota.EventFilter) ([]*fota.Event, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	// The actor and rollout terms repeat the partial indexes' conditions,
	// which a generic plan cannot infer from a parameter.
	var where []string
	var args []any
	add := func(cond string, arg any) {
		args = append(args, arg)
		where = append(where, strings.ReplaceAll(cond, "$?", fmt.Sprintf("$%d", len(args))))
	}
	if f.DeviceID != "" {
		add(`device_id = $?`, f.DeviceID)
	}
	if f.Kind != "" {
		add(`kind = $?`, f.Kind)
	}
	if f.RolloutID != 0 {
		add(`rollout_id = $? AND rollout_id <> 0`, f.RolloutID)
	}
	if f.Actor != "" {
		add(`actor = $? AND actor <> ''`, f.Actor)
	}
	if f.AfterID > 0 {
		add(`id > $?`, f.AfterID)
	}
	if f.BeforeID > 0 {
		add(`id < $?`, f.BeforeID)
	}
	q := `SELECT id, time_ms, kind, device_id, release_version, session_id, detail, actor, rollout_id, api FROM events`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	args = append(args, limit)
	q += fmt.Sprintf(` ORDER BY id DESC LIMIT $%d`, len(args))
	return queryAll(ctx, s.pool, "events", func(row rowScanner) (*fota.Event, error) {
		e := &fota.Event{}
		var t int64
		err := row.Scan(&e.ID, &t, &e.Kind, &e.DeviceID, &e.ReleaseVersion, &e.SessionID, &e.Detail, &e.Actor, &e.RolloutID, &e.API)
		e.Time = fromMS(t)
		return e, err
	}, q, args...)
}
